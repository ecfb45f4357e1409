"""LoRA supervised finetuning with TRL, loss on the answer only, resumable from checkpoints.

The dataset is prompt/completion pairs rendered by :data:`slipcore_nb.prompts.PROMPT`, so TRL
masks the prompt and the model learns only the nSLIP line and its EOS. Precision and optimizer
follow the hardware: on CUDA bf16 (or fp16) and 8-bit AdamW; on CPU, Unsloth's CPU path chooses
bf16 itself while plain TRL must run fp32 (``use_cpu=True, bf16=False``, no checkpointing).
Checkpoints are written every ``save_steps``. :func:`start_run` decides where a run starts: training
again with the same settings and data continues from the last checkpoint; any other setting (a moved
slider, another model or dataset) starts afresh, so the "after" numbers always belong to the sliders shown.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
import urllib.parse
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import artifacts, distributed, whole_files
from .loading import LoadedModel
from .machine import Hardware
from .registry import ModelSpec
from .prompts import PROMPT


@dataclass(frozen=True)
class TrainConfig:
    """What a run needs; :meth:`from_spec` fills what the sliders leave out from the registry entry."""

    model: str
    max_steps: int
    learning_rate: float
    lora_rank: int
    batch_size: int
    grad_accum: int
    save_steps: int
    output_dir: Path
    warmup_steps: int = 5
    logging_steps: int = 1
    seed: int = 3407
    max_length: int = 512
    loraplus_lr_ratio: float | None = None  # LoRA+: the B matrices learn this many times faster (None: off)

    def __post_init__(self):
        """Refuse a setting no run can use, naming it: the sliders, the environment and callers all land here."""
        for name in ("max_steps", "lora_rank", "batch_size", "grad_accum", "save_steps", "logging_steps", "max_length",
                     "warmup_steps", "seed"):
            _check_count(name, getattr(self, name), 0 if name in ("warmup_steps", "seed") else 1)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"TrainConfig.model must be a model name, got {self.model!r}")
        if not isinstance(self.output_dir, (str, Path)) or not str(self.output_dir).strip():
            raise ValueError(f"TrainConfig.output_dir must be a folder path, got {self.output_dir!r}")
        for name in ("learning_rate", "loraplus_lr_ratio"):
            value = getattr(self, name)
            if value is None and name == "loraplus_lr_ratio":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"TrainConfig.{name} must be a positive finite number, got {value!r}")

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        max_steps: int | None = None,
        lora_rank: int | None = None,
        learning_rate: float | None = None,
        output_dir: str | Path | None = None,
        **overrides,
    ) -> "TrainConfig":
        """Slider values win; ``None`` means the model's default. Each model gets its own run folder."""
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"TrainConfig.from_spec needs a ModelSpec (registry.get_spec(name)), got {spec!r}")
        max_steps = spec.max_steps if max_steps is None else max_steps
        lora_rank = spec.lora_rank if lora_rank is None else lora_rank
        _check_count("max_steps", max_steps, 1)  # before the arithmetic below uses it
        root = Path(output_dir or artifacts.output_dir() / "checkpoints")
        config = cls(
            model=spec.name,
            max_steps=max_steps,
            learning_rate=spec.learning_rate if learning_rate is None else learning_rate,
            lora_rank=lora_rank,
            batch_size=spec.batch_size,
            grad_accum=spec.grad_accum,
            save_steps=min(spec.save_steps, max_steps),
            output_dir=root / run_folder_name(spec.name),
            warmup_steps=min(5, max_steps // 10),
            max_length=spec.max_seq_length,
            loraplus_lr_ratio=spec.loraplus_lr_ratio,
        )
        return replace(config, **overrides)


def _check_count(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"TrainConfig.{name} must be an int of at least {least}, got {value!r}")


def run_folder_name(model: str) -> str:
    """The model's run folder under the checkpoints root: one name per model (``org/m`` and ``org_m``
    differ), never a path (``/`` is escaped) and never ``.`` or ``..`` (a leading dot is escaped)."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"a model name is needed for its run folder, got {model!r}")
    name = urllib.parse.quote(model, safe="")
    return "%2E" + name[1:] if name.startswith(".") else name


def prompt_completion_dataset(examples: list[dict], eos_token: str):
    """``{"prompt", "completion"}`` rows: TRL then takes the loss on the completion only."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": PROMPT.prompt(ex["input"]), "completion": PROMPT.completion(ex["target"], eos_token)} for ex in examples]
    )


def hardware_kwargs(backend: str, hardware: Hardware) -> dict:
    """The ``SFTConfig`` fields that follow the machine: precision, optimizer, device, checkpointing.

    On a GPU: bf16 where it is native (Ampere and newer), else fp16 (a T4), the rule Unsloth uses;
    8-bit AdamW (bitsandbytes) keeps the optimizer state small. Unsloth applies its own gradient
    checkpointing when it loads on CUDA, plain peft on CUDA takes TRL's; a CPU has memory to spare.
    """
    checkpointing = hardware.cuda and backend == "transformers"
    if hardware.cuda:
        return dict(bf16=hardware.gpu_bf16, fp16=not hardware.gpu_bf16, optim="adamw_8bit",
                    gradient_checkpointing=checkpointing)
    # Unsloth's CPU backend keeps bf16 autocast where the CPU has native bf16, else turns it off;
    # plain TRL on a CPU must run fp32.
    return dict(bf16=backend == "unsloth", fp16=False, optim="adamw_torch", use_cpu=True,
                gradient_checkpointing=checkpointing)


def sft_config_kwargs(config: TrainConfig, backend: str, hardware: Hardware) -> dict:
    """``SFTConfig``'s arguments, as :func:`make_trainer` passes them (notebook 03, the scripts and benchmarks)."""
    return dict(
        output_dir=str(config.output_dir),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps,
        completion_only_loss=True,
        max_length=config.max_length,
        # Batches of similar length: prompts vary from ~90 to ~200 tokens, and padding every row of a
        # random batch to its longest costs a quarter of the compute on a CPU.
        train_sampling_strategy="group_by_length",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=config.logging_steps,
        report_to="none",
        seed=config.seed,
        **hardware_kwargs(backend, hardware),
        **distributed.sft_kwargs(distributed.Ranks.from_env()),
    )


def sft_trainer_class(backend: str, hardware: Hardware):
    """TRL's ``SFTTrainer``, read at call time because Unsloth replaces it when imported.

    Stock TRL 1.x always takes the loss through a fused LM head whose kernel is Triton (CUDA/XPU
    only), so training fails on a CPU; there the plain transformers path uses the model's own
    cross-entropy, which honours the same completion-only labels. Unsloth's CPU backend routes
    that kernel itself.
    """
    import trl
    from transformers import Trainer

    if hardware.cuda or backend == "unsloth":
        return trl.SFTTrainer

    class CPUSFTTrainer(trl.SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CPUSFTTrainer


def optimizers(model, config: TrainConfig) -> tuple:
    """``SFTTrainer``'s ``optimizers``: (None, None) lets the trainer build AdamW from its config;
    with LoRA+ (arXiv 2402.12354) peft builds it with each ``lora_B`` at ``loraplus_lr_ratio`` times
    the learning rate (Unsloth's own LoRA+ switch is GPU-only). The trainer still makes the schedule."""
    if config.loraplus_lr_ratio is None:
        return None, None
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=config.learning_rate,
                                     loraplus_lr_ratio=config.loraplus_lr_ratio), None


def make_trainer(loaded: LoadedModel, examples: list[dict], config: TrainConfig, callbacks: tuple = ()):
    """A TRL SFT trainer over ``examples`` with completion-only loss."""
    import trl

    args = trl.SFTConfig(**sft_config_kwargs(config, loaded.backend, loaded.hardware))
    return sft_trainer_class(loaded.backend, loaded.hardware)(
        model=loaded.model,
        args=args,
        train_dataset=prompt_completion_dataset(examples, loaded.tokenizer.eos_token),
        processing_class=loaded.tokenizer,
        callbacks=list(callbacks),
        optimizers=optimizers(loaded.model, config),
    )


@dataclass(frozen=True)
class MaskedExample:
    """One training row as the loss sees it: the masked prompt and the tokens that are learned."""

    masked_text: str
    trained_text: str
    masked_tokens: int
    trained_tokens: int

    def __str__(self) -> str:
        return (
            f"--- not trained on ({self.masked_tokens} tokens, label -100) ---\n{self.masked_text}\n"
            f"--- trained on ({self.trained_tokens} tokens) ---\n{self.trained_text}"
        )


def masked_example(trainer, index: int = 0) -> MaskedExample:
    """Decode row ``index`` through the trainer's own collator, so what is shown is what is masked."""
    batch = trainer.data_collator([trainer.train_dataset[index]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    keep = labels != -100
    tokenizer = trainer.processing_class
    return MaskedExample(
        masked_text=tokenizer.decode(ids[~keep], clean_up_tokenization_spaces=False),
        trained_text=tokenizer.decode(labels[keep], clean_up_tokenization_spaces=False),
        masked_tokens=int((~keep).sum()),
        trained_tokens=int(keep.sum()),
    )


@dataclass
class TrainResult:
    loss_history: list[tuple[int, float]]  # (step, training loss), including steps before a resume
    steps: int
    seconds: float
    resumed_from: str | None
    interrupted: bool
    output_dir: Path

    @classmethod
    def of(cls, trainer, start: RunStart, seconds: float, interrupted: bool = False) -> "TrainResult":
        """What ``trainer.train`` left in the trainer's state, started from ``start``."""
        history = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
        return cls(loss_history=history, steps=trainer.state.global_step, seconds=seconds,
                   resumed_from=start.checkpoint, interrupted=interrupted, output_dir=Path(trainer.args.output_dir))


def run_metrics(model_name: str, backend: str, config: TrainConfig, result: TrainResult, before, after,
                eval_split: str, after_seen_wording=None, after_guide_style=None) -> dict:
    """The record of one run that notebook 05 and the README quote (``train_metrics.json``).

    ``before`` and ``after`` are :class:`~slipcore_nb.evaluate.EvalReport` s on the first examples of
    ``eval_split``; 05 re-scores the exported model on the same ones, so split and count are kept.
    ``after_seen_wording``, where given, scores held-out goals in the training wording, and
    ``after_guide_style`` the guide's one-line style (``eval_guide``). A run whose
    weights were split across processes (FSDP, ZeRO-3) could not score itself: ``None`` for both.
    """
    return {
        "model": model_name, "backend": backend, "max_steps": config.max_steps, "rank": config.lora_rank,
        "lr": config.learning_rate, "loraplus_lr_ratio": config.loraplus_lr_ratio, "steps": result.steps,
        "minutes": round(result.seconds / 60, 2),
        "eval_split": eval_split, "eval_examples": len(after.rows) if after else 0,
        "loss_history": result.loss_history,
        "before": before.summary() if before else None, "after": after.summary() if after else None,
        **({"after_seen_wording": after_seen_wording.summary()} if after_seen_wording else {}),
        **({"after_guide_style": after_guide_style.summary()} if after_guide_style else {}),
    }


RUN_RECORD = "run.json"  # in the run folder: the settings and data its checkpoints were trained with


@dataclass(frozen=True)
class RunStart:
    """Where training starts: ``checkpoint`` (``None``: step 0) and, in one sentence, why."""

    checkpoint: str | None
    reason: str


def run_settings(config: TrainConfig, examples: list[dict]) -> dict:
    """Everything that changes what a run learns: the config (not where it is saved) and a hash of the data.

    The examples are checked as the dataset checks them (:func:`~slipcore_nb.dataset.check_examples`):
    training on a row without a target, or on none, fails here, naming it, before a folder is touched."""
    from .dataset import check_examples

    examples = check_examples(examples)
    settings = {key: value for key, value in asdict(config).items() if key not in ("output_dir", "logging_steps")}
    data = json.dumps(examples, sort_keys=True, ensure_ascii=False).encode()
    return {**settings, "data_sha256": hashlib.sha256(data).hexdigest()[:16]}


def start_run(config: TrainConfig, examples: list[dict], fresh: bool = False) -> RunStart:
    """Continue the run in ``config.output_dir`` only if it had the same settings and data; else start over.

    Starting over clears the folder and records the new settings, so a checkpoint is never resumed
    under sliders it was not trained with (a resumed 120-step run asked for 60 steps trains nothing).
    """
    folder = Path(config.output_dir)
    settings = run_settings(config, examples)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"TrainConfig.output_dir {str(folder)!r} is a file, not a run folder")
    record = folder / RUN_RECORD
    earlier = None if fresh or not record.exists() else _read_record(record)
    checkpoint = last_checkpoint(folder)
    if fresh:
        why = "asked for a fresh run"
    elif earlier is not None and earlier != settings:
        changed = [f"{key} {earlier.get(key)} -> {value}" for key, value in settings.items() if earlier.get(key) != value]
        why = "settings changed since the last run: " + ", ".join(changed)
    elif checkpoint is None:
        why = "no earlier checkpoint of this model"
    else:
        step = int(checkpoint.rsplit("-", 1)[1])
        left = "nothing left to train" if step >= config.max_steps else f"{config.max_steps - step} steps to go"
        return RunStart(checkpoint, f"Resuming {checkpoint} (same settings and data; {left}).")
    if folder.exists():
        if any(folder.iterdir()) and not record.exists():
            raise RuntimeError(f"{folder} holds files but no {RUN_RECORD}: it is not a run folder this project "
                               "made, so it is left as it is; move it away or pick another output_dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    whole_files.write_text(record, json.dumps(settings, indent=1))
    return RunStart(None, f"Starting a fresh run in {folder}: {why}.")


def _read_record(record: Path) -> dict:
    try:
        earlier = json.loads(record.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{record} is damaged ({err}); start over with fresh=True (--fresh), which clears "
                         "this run folder") from None
    if not isinstance(earlier, dict):
        raise ValueError(f"{record} holds a {type(earlier).__name__}, not the run's settings; start over with "
                         "fresh=True (--fresh)")
    return earlier


def last_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


ATTENTION_KERNELS = ("auto", "math", "default")


def bf16_weights_on_cpu(model) -> bool:
    """Unsloth's CPU path on a CPU with bf16 matmuls: the case the two speedups below are for."""
    import torch

    from .loading import compute_device

    return compute_device(model).type == "cpu" and any(w.dtype == torch.bfloat16 for w in model.parameters())


def auto_attention_kernel(model) -> str:
    """What ``"auto"`` picks: ``"math"`` for a model with bf16 weights on a CPU, else ``"default"``."""
    return "math" if bf16_weights_on_cpu(model) else "default"


@contextmanager
def attention_kernel(model, kernel: str = "auto"):
    """Train a bf16 model on a CPU with PyTorch's plain (math) attention kernel rather than its flash kernel.

    At our ~200-token rows the CPU flash kernel's bf16 backward pass took a fifth of each step (profiled
    on a 2-core AMX Xeon; ``benchmarks/speed.py``: 1.13-1.15x the tokens/s with the math kernel); in fp32
    the math kernel was no faster (0.93-0.94x), so ``"auto"`` uses it only for bf16 weights on a CPU, and a GPU
    keeps PyTorch's own choice. ``"math"`` and ``"default"`` force one or the other (the benchmark's legs).
    """
    if kernel not in ATTENTION_KERNELS:
        raise ValueError(f"attention kernel must be one of {ATTENTION_KERNELS}, got {kernel!r}")
    if kernel == "auto":
        kernel = auto_attention_kernel(model)
    if kernel == "default":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


@contextmanager
def skip_lora_input_cast(model):
    """While bf16 autocast is on, let each LoRA adapter of a bf16 model on a CPU take its input as it is.

    peft casts every adapter's input to the adapter's fp32 weights, and autocast casts it straight back to
    bf16 for the matmul: two activation-sized copies per adapter and pass that change nothing. Skipping them
    trained SmolLM2 at 1.10x the tokens/s on a 2-core AMX Xeon (``benchmarks/speed.py``) to the same 300
    losses, bit for bit. Each adapter decides per call (a forward pre-hook), so code that runs inside
    ``trainer.train`` without autocast (an evaluation in a callback) keeps peft's cast; fp32 models have
    nothing to skip, and a GPU keeps peft's (and Unsloth's) own path.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)] if bf16_weights_on_cpu(model) else []
    before = [getattr(layer, "cast_input_dtype_enabled", True) for layer in layers]

    def follow_autocast(layer, args):
        layer.cast_input_dtype_enabled = not torch.is_autocast_enabled("cpu")

    hooks = [layer.register_forward_pre_hook(follow_autocast) for layer in layers]
    try:
        yield
    finally:
        for hook, layer, enabled in zip(hooks, layers, before):
            hook.remove()
            layer.cast_input_dtype_enabled = enabled


def train(trainer, start: RunStart, attention: str = "auto", skip_input_cast: bool = True) -> TrainResult:
    """``trainer.train`` from ``start`` (see :func:`start_run`), timed, with the loss history,
    under :func:`attention_kernel` ``attention`` and, unless ``skip_input_cast`` is off (a benchmark leg),
    :func:`skip_lora_input_cast`.

    A KeyboardInterrupt (the notebook's stop button) ends the run early and returns what was
    learned so far; the same settings then continue from the last checkpoint.
    """
    began = time.perf_counter()
    interrupted = False
    try:
        skipping = skip_lora_input_cast(trainer.model) if skip_input_cast else nullcontext()
        with attention_kernel(trainer.model, attention), skipping:
            trainer.train(resume_from_checkpoint=start.checkpoint)
    except KeyboardInterrupt:
        interrupted = True
        print(f"Interrupted at step {trainer.state.global_step}; run again to continue from "
              f"{last_checkpoint(trainer.args.output_dir) or 'the start'}.")
    return TrainResult.of(trainer, start, time.perf_counter() - began, interrupted)
