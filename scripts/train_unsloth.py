#!/usr/bin/env python
"""Finetune a model to speak nSLIP from the command line: the notebooks' pipeline, same library calls.

    python scripts/train_unsloth.py --model smollm2-135m --max-steps 120 --rank 16 --lr 1e-3

Loads the model (Unsloth, or transformers + peft as fallback), scores the eval split, trains with
LoRA (resuming from the last checkpoint of the same model and rank), scores again, and saves
the adapter. Defaults come from the model's registry entry.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="registry name, hub id or local folder (default: SLIPCORE_MODEL, else by hardware)")
    parser.add_argument("--max-steps", type=int, help="training steps (default: the model's)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default: the model's); alpha = rank")
    parser.add_argument("--lr", type=float, help="learning rate (default: the model's)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("SLIPCORE_OUTPUT_DIR", "outputs")),
                        help="output folder: checkpoints/, lora/, train_metrics.json (default: outputs)")
    parser.add_argument("--backend", choices=("unsloth", "transformers"), help="force a loading path")
    parser.add_argument("--eval-limit", type=int, help="score only the first N eval examples")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("UNSLOTH_AUTO_INSTALL", "0")
    from slipcore_nb import dataset, evaluate, export, models, training

    choice = models.choose_model() if args.model is None else None
    name = args.model or choice.name
    if choice:
        print(f"model: {name} ({choice.reason}; {choice.hardware.describe()})")
    loaded = models.load_model(name, rank=args.rank, backend=args.backend)
    print(f"backend: {loaded.backend} - {loaded.note}")

    train, held_out = dataset.load_split("train"), dataset.load_split("eval")[: args.eval_limit]
    before = evaluate.evaluate(loaded.model, loaded.tokenizer, held_out, progress=True)
    print("before training:", before.summary())

    config = training.TrainConfig.from_spec(
        loaded.spec, max_steps=args.max_steps, rank=args.rank, lr=args.lr, output_dir=args.out / "checkpoints"
    )
    trainer = training.make_trainer(loaded, train, config)
    print(training.masked_example(trainer))
    result = training.train(trainer, resume=not args.fresh)
    print(f"{result.steps} steps in {result.seconds / 60:.1f} min"
          + (f", resumed from {result.resumed_from}" if result.resumed_from else ""))
    if result.interrupted:
        return 130

    after = evaluate.evaluate(loaded.model, loaded.tokenizer, held_out, progress=True)
    print("after training: ", after.summary())
    print(after.table.to_string())
    adapter = export.save_adapter(loaded.model, loaded.tokenizer, args.out / "lora")
    metrics = {
        "model": name, "backend": loaded.backend, "max_steps": config.max_steps, "rank": config.lora_rank,
        "lr": config.learning_rate, "steps": result.steps, "minutes": round(result.seconds / 60, 2),
        "loss_history": result.loss_history, "before": before.summary(), "after": after.summary(),
    }
    (args.out / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"adapter: {adapter.path}  metrics: {args.out / 'train_metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
