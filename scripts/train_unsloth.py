#!/usr/bin/env python
"""Finetune a model to speak nSLIP from the command line: the notebooks' pipeline, same library calls.

    python scripts/train_unsloth.py --model smollm2-135m --max-steps 120 --rank 16 --lr 1e-3

Loads the model (Unsloth, or transformers + peft as fallback), scores the eval split, trains with
LoRA (resuming from the last checkpoint of a run with the same settings and data), scores again, and writes what
notebooks 01 and 03 write (``model.json``, ``lora/``, ``train_metrics.json``), so notebooks 04 and 05
go on from here. Defaults come from the model's registry entry.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--out", type=Path, help="output folder, as SLIPCORE_OUTPUT_DIR (default: outputs/ in the repository)")
    parser.add_argument("--backend", choices=("unsloth", "transformers"), help="force a loading path")
    parser.add_argument("--eval-limit", type=int, help="score only the first N eval examples")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("UNSLOTH_AUTO_INSTALL", "0")
    if args.out:
        os.environ["SLIPCORE_OUTPUT_DIR"] = str(args.out.resolve())
    from slipcore_nb import artifacts, dataset, evaluate, export, models, training

    choice = models.choose_model() if args.model is None else None
    name = args.model or choice.name
    reason = choice.reason if choice else "named with --model"
    print(f"model: {name} ({reason})")
    loaded = models.load_model(name, lora_rank=args.rank, backend=args.backend)
    print(f"backend: {loaded.backend} - {loaded.note}")
    # What notebook 01 would have written, so 04 and 05 continue from this run.
    artifacts.save_json("model.json", {"name": name, "reason": reason, "backend": loaded.backend,
                                       "hardware": models.detect_hardware().describe()})

    train, held_out = dataset.load_split("train"), dataset.load_split(dataset.HEADLINE_SPLIT)[: args.eval_limit]
    before = evaluate.evaluate(loaded.model, loaded.tokenizer, held_out, progress=True)
    print("before training:", before.summary())

    config = training.TrainConfig.from_spec(loaded.spec, max_steps=args.max_steps, lora_rank=args.rank,
                                            learning_rate=args.lr)
    trainer = training.make_trainer(loaded, train, config)
    print(training.masked_example(trainer))
    start = training.start_run(config, train, fresh=args.fresh)
    print(start.reason)
    result = training.train(trainer, start)
    print(f"{result.steps} steps in {result.seconds / 60:.1f} min")
    if result.interrupted:
        return 130

    after = evaluate.evaluate(loaded.model, loaded.tokenizer, held_out, progress=True)
    print("after training: ", after.summary())
    print(after.table.to_string())
    adapter = export.save_adapter(loaded.model, loaded.tokenizer, artifacts.path("lora"))
    metrics = artifacts.save_json("train_metrics.json",
                                  training.run_metrics(name, loaded.backend, config, result, before, after,
                                                                      dataset.HEADLINE_SPLIT))
    print(f"adapter: {adapter.path}  metrics: {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
