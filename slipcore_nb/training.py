"""LoRA supervised finetuning with TRL, loss on the answer only, resumable from checkpoints.

The dataset is prompt/completion pairs rendered by :data:`slipcore_nb.prompts.PROMPT`, so TRL
masks the prompt and the model learns only the nSLIP line and its EOS. Precision and optimizer
follow the hardware: on CUDA bf16 (or fp16) and 8-bit AdamW; on CPU, Unsloth's CPU path chooses
bf16 itself while plain TRL must run fp32 (``use_cpu=True, bf16=False``, no checkpointing).
Checkpoints are written every ``save_steps``; running :func:`train` again continues from the last one.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import artifacts
from .models import Hardware, LoadedModel, ModelSpec
from .prompts import PROMPT


@dataclass(frozen=True)
class TrainConfig:
    """What a run needs; :meth:`from_spec` fills what the sliders leave out from the registry entry."""

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

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        max_steps: int | None = None,
        rank: int | None = None,
        lr: float | None = None,
        output_dir: str | Path | None = None,
        **overrides,
    ) -> "TrainConfig":
        """Slider values win; ``None`` means the model's default. Each model and rank gets its own run folder."""
        max_steps = max_steps or spec.max_steps
        rank = rank or spec.lora_rank
        root = Path(output_dir or artifacts.output_dir() / "checkpoints")
        config = cls(
            max_steps=max_steps,
            learning_rate=lr or spec.learning_rate,
            lora_rank=rank,
            batch_size=spec.batch_size,
            grad_accum=spec.grad_accum,
            save_steps=min(spec.save_steps, max_steps),
            output_dir=root / f"{re.sub(r'[^A-Za-z0-9.-]+', '_', spec.name)}-r{rank}",
            warmup_steps=min(5, max_steps // 10),
            max_length=spec.max_seq_length,
        )
        return replace(config, **overrides)


def prompt_completion_dataset(examples: list[dict], eos_token: str):
    """``{"prompt", "completion"}`` rows: TRL then takes the loss on the completion only."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": PROMPT.prompt(ex["input"]), "completion": PROMPT.completion(ex["target"], eos_token)} for ex in examples]
    )


def sft_config_kwargs(config: TrainConfig, backend: str, hardware: Hardware) -> dict:
    """Exactly what goes to ``SFTConfig``; precision and optimizer follow the hardware and backend.

    On a GPU: bf16 where it is native (Ampere and newer), else fp16 (a T4), the rule Unsloth uses;
    8-bit AdamW (bitsandbytes) keeps the optimizer state small.
    """
    cuda = hardware.cuda
    if cuda:
        precision = dict(bf16=hardware.gpu_bf16, fp16=not hardware.gpu_bf16, optim="adamw_8bit")
    elif backend == "unsloth":
        # Unsloth's CPU backend keeps bf16 autocast where the CPU has native bf16, else turns it off.
        precision = dict(bf16=True, fp16=False, optim="adamw_torch", use_cpu=True)
    else:
        precision = dict(bf16=False, fp16=False, optim="adamw_torch", use_cpu=True)
    return dict(
        output_dir=str(config.output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps,
        weight_decay=0.0,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        report_to="none",
        max_length=config.max_length,
        completion_only_loss=True,
        packing=False,
        # Batches of similar length: prompts vary from ~90 to ~200 tokens, and padding every row of a
        # random batch to its longest costs a quarter of the compute on a CPU.
        train_sampling_strategy="group_by_length",
        # Unsloth applies its own checkpointing on CUDA when loading; plain peft on CUDA uses TRL's.
        gradient_checkpointing=cuda and backend == "transformers",
        dataloader_num_workers=0,
        disable_tqdm=False,
        **precision,
    )


def _trainer_class(backend: str, cuda: bool):
    """TRL's ``SFTTrainer``, read at call time because Unsloth replaces it when imported.

    Stock TRL 1.x always takes the loss through a fused LM head whose kernel is Triton (CUDA/XPU
    only), so training fails on a CPU; there the plain transformers path uses the model's own
    cross-entropy, which honours the same completion-only labels. Unsloth's CPU backend routes
    that kernel itself.
    """
    import trl
    from transformers import Trainer

    if cuda or backend == "unsloth":
        return trl.SFTTrainer

    class CPUSFTTrainer(trl.SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CPUSFTTrainer


def make_trainer(loaded: LoadedModel, examples: list[dict], config: TrainConfig, callbacks: tuple = ()):
    """A TRL SFT trainer over ``examples`` with completion-only loss."""
    import trl

    args = trl.SFTConfig(**sft_config_kwargs(config, loaded.backend, loaded.hardware))
    return _trainer_class(loaded.backend, loaded.hardware.cuda)(
        model=loaded.model,
        args=args,
        train_dataset=prompt_completion_dataset(examples, loaded.tokenizer.eos_token),
        processing_class=loaded.tokenizer,
        callbacks=list(callbacks),
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
        masked_text=tokenizer.decode(ids[~keep]),
        trained_text=tokenizer.decode(labels[keep]),
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


def run_metrics(model_name: str, backend: str, config: TrainConfig, result: TrainResult, before, after,
                eval_split: str, after_seen_wording=None) -> dict:
    """The record of one run that notebook 05 and the README quote (``train_metrics.json``).

    ``before`` and ``after`` are :class:`~slipcore_nb.evaluate.EvalReport` s on the first examples of
    ``eval_split``; 05 re-scores the exported model on the same ones, so split and count are kept.
    ``after_seen_wording``, where given, scores held-out goals in the training wording.
    """
    return {
        "model": model_name, "backend": backend, "max_steps": config.max_steps, "rank": config.lora_rank,
        "lr": config.learning_rate, "steps": result.steps, "minutes": round(result.seconds / 60, 2),
        "eval_split": eval_split, "eval_examples": len(after.rows), "loss_history": result.loss_history,
        "before": before.summary(), "after": after.summary(),
        **({"after_seen_wording": after_seen_wording.summary()} if after_seen_wording else {}),
    }


def last_checkpoint(output_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def train(trainer, resume: bool = True) -> TrainResult:
    """Train, continuing from the last checkpoint when ``resume``; otherwise the run folder is cleared.

    A KeyboardInterrupt (the notebook's stop button) ends the run early and returns what was
    learned so far; calling :func:`train` again continues from the last checkpoint.
    """
    output_dir = Path(trainer.args.output_dir)
    checkpoint = last_checkpoint(output_dir) if resume else None
    if not resume and output_dir.exists():
        shutil.rmtree(output_dir)
    start = time.perf_counter()
    interrupted = False
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    except KeyboardInterrupt:
        interrupted = True
        print(f"Interrupted at step {trainer.state.global_step}; run again to continue from "
              f"{last_checkpoint(output_dir) or 'the start'}.")
    history = [(entry["step"], entry["loss"]) for entry in trainer.state.log_history if "loss" in entry]
    return TrainResult(
        loss_history=history,
        steps=trainer.state.global_step,
        seconds=time.perf_counter() - start,
        resumed_from=checkpoint,
        interrupted=interrupted,
        output_dir=output_dir,
    )
