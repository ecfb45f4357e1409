"""Role adapters, the guide's tip 4: one small LoRA per agent role on one shared base.

A role adapter learns only its role's moves, and all four are served from a single base model:
llama-server loads every adapter at scale 0 and each request switches on its role's
(:func:`request_fields`), Ollama gets one Modelfile per role with an ``ADAPTER`` line
(:func:`write_modelfiles`). Whether four adapters beat one shared adapter at the same training
compute is measured by ``python -m benchmarks.role_adapters``.
"""

from __future__ import annotations

from pathlib import Path

from .conversations import ROLES


def role_examples(examples: list[dict], role: str) -> list[dict]:
    """The examples one role's adapter trains on (its own answers only)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return [ex for ex in examples if ex["role"] == role]


def train(model_name: str, examples: list[dict], role: str, out_dir: str | Path, max_steps: int,
          lora_rank: int | None = None):
    """Train a fresh LoRA on ``role``'s examples for ``max_steps``; save it to ``out_dir/<role>``.

    Returns (the adapter folder, :class:`~slipcore_nb.training.TrainResult`).
    """
    from . import export, loading, training

    loaded = loading.load_model(model_name, lora_rank=lora_rank)
    config = training.TrainConfig.from_spec(loaded.spec, max_steps=max_steps, lora_rank=lora_rank,
                                            output_dir=Path(out_dir) / "checkpoints" / role)
    own = role_examples(examples, role)
    result = training.train(training.make_trainer(loaded, own, config), training.start_run(config, own))
    adapter = export.save_adapter(loaded.model, loaded.tokenizer, Path(out_dir) / role)
    return adapter.path, result


def request_fields(adapters: list[str], chosen: str) -> dict:
    """The llama-server request fields that answer with ``chosen``: its LoRA at scale 1, every other off.

    ``adapters`` is the order of the server's ``--lora`` flags (that order gives the ids). The prompt
    cache is off: llama-server reuses a cached prompt prefix even when it was computed under another
    adapter (measured: the same prompt then answers differently), so adapters cannot share it.
    """
    if chosen not in adapters:
        raise ValueError(f"no adapter {chosen!r}; the server has {adapters}")
    return {"lora": [{"id": index, "scale": 1.0 if name == chosen else 0.0} for index, name in enumerate(adapters)],
            "cache_prompt": False}


def write_modelfiles(base_gguf: str | Path, adapter_ggufs: dict[str, str | Path], out_dir: str | Path) -> dict:
    """One Ollama Modelfile per adapter (``FROM`` the base, ``ADAPTER`` the role's LoRA), in ``out_dir/<name>``."""
    from .modelfile import write_modelfile

    return {name: write_modelfile(base_gguf, Path(out_dir) / name, model_name=f"slipcore-{name}", adapter_path=gguf)
            for name, gguf in adapter_ggufs.items()}
