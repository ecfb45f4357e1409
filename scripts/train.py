#!/usr/bin/env python
"""Finetune a model to speak nSLIP from the command line: the notebooks' pipeline, same library calls.

    python scripts/train.py --model smollm2-135m --max-steps 120 --lora-rank 16 --learning-rate 2e-3

Loads the model (Unsloth, or transformers + peft as fallback), scores the eval split, trains with
LoRA (resuming from the last checkpoint of a run with the same settings and data), scores again, and writes what
notebooks 01 and 03 write (``model.json``, ``lora/``, ``train_metrics.json``), so notebooks 04 and 05
go on from here. Defaults come from the model's registry entry.

The same script runs on several GPUs (or CPU processes) unchanged:

    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 4 scripts/train.py ...

Every rank trains on its own share of each batch; rank 0 alone scores, chooses where the run starts
and writes checkpoints, metrics and the adapter (see ``slipcore_nb.distributed``). ``--max-steps``
counts optimizer steps, so N processes see N times the rows per step.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from slipcore_nb.arguments import count, model_name, positive_number  # noqa: E402 - after the path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=model_name, help="registry name, hub id or local folder (default: SLIPCORE_MODEL, else by hardware)")
    parser.add_argument("--max-steps", type=count(), help="training steps (default: the model's)")
    parser.add_argument("--lora-rank", type=count(), help="LoRA rank (default: the model's); alpha = rank")
    parser.add_argument("--learning-rate", type=positive_number, help="learning rate (default: the model's)")
    parser.add_argument("--save-steps", type=count(), help="checkpoint every N steps (default: the model's)")
    parser.add_argument("--no-4bit", action="store_true",
                        help="load the base in 16 bits even where the registry says 4-bit (ZeRO-3 and FSDP need it)")
    parser.add_argument("--out", type=Path, help="output folder, as SLIPCORE_OUTPUT_DIR (default: outputs/ in the repository)")
    parser.add_argument("--backend", choices=("unsloth", "transformers"), help="force a loading path")
    parser.add_argument("--eval-limit", type=count(), help="score only the first N eval examples")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("UNSLOTH_AUTO_INSTALL", "0")
    if args.out:
        os.environ["SLIPCORE_OUTPUT_DIR"] = str(args.out.resolve())
    from slipcore_nb import artifacts, dataset, distributed, evaluate, export, loading, machine, registry, training

    ranks = distributed.Ranks.from_env()
    say = print if ranks.main else (lambda *_, **__: None)  # one voice in the log, not one per rank
    choice = registry.choose_model() if args.model is None else None
    name = args.model or choice.name
    reason = choice.reason if choice else "named with --model"
    say(f"model: {name} ({reason})")
    loaded = loading.load_model(name, lora_rank=args.lora_rank, backend=args.backend,
                              load_in_4bit=False if args.no_4bit else None)
    say(f"backend: {loaded.backend} - {loaded.note}")
    say(f"processes: {ranks.describe()}")

    train, held_out = dataset.load_split("train"), dataset.load_split(dataset.HEADLINE_SPLIT)[: args.eval_limit]
    # Under FSDP / ZeRO-3 no rank can generate alone: score the exported model with notebook 05 instead.
    scores = ranks.main and not ranks.shards_weights
    if ranks.shards_weights:
        say(f"{ranks.mode} splits the weights across ranks: no scoring here; notebook 05 scores the export.")
    if ranks.main:
        # What notebook 01 would have written, so 04 and 05 continue from this run.
        artifacts.save_json("model.json", {"name": name, "reason": reason, "backend": loaded.backend,
                                           "hardware": machine.detect_hardware().describe()})
    before = evaluate.evaluate(loaded.model, loaded.tokenizer, held_out, progress=True) if scores else None
    if before is not None:
        say("before training:", before.summary())

    overrides = {"save_steps": args.save_steps} if args.save_steps else {}
    config = training.TrainConfig.from_spec(loaded.spec, max_steps=args.max_steps, lora_rank=args.lora_rank,
                                            learning_rate=args.learning_rate, **overrides)
    trainer = training.make_trainer(loaded, train, config)  # under a launcher this joins the process group
    if ranks.main:
        print(training.masked_example(trainer))
    start = distributed.broadcast(training.start_run(config, train, fresh=args.fresh) if ranks.main else None, ranks)
    say(start.reason)
    if ranks.distributed and not loaded.hardware.cuda:
        distributed.load_checkpoints_on_indexed_cpus()
    rows = distributed.RowLog(trainer.data_collator)
    trainer.data_collator = rows
    result = training.train(trainer, start)
    reports = distributed.gather(distributed.rank_report(ranks, result.steps, rows, loaded.model), ranks)
    say(f"{result.steps} steps in {result.seconds / 60:.1f} min")
    if result.interrupted:
        return 130
    if ranks.shards_weights:
        trainer.save_model(str(artifacts.path("lora")))  # all ranks: the trainer gathers the shards to rank 0
        if ranks.main:
            loaded.tokenizer.save_pretrained(artifacts.path("lora"))
        distributed.wait_for_everyone(ranks)
    if not ranks.main:
        return 0

    after = evaluate.evaluate(loaded.model, loaded.tokenizer, held_out, progress=True) if scores else None
    adapter = artifacts.path("lora")  # already saved by the trainer when the weights were sharded
    if after is not None:
        say("after training: ", after.summary())
        say(after.table.to_string())
        export.save_adapter(loaded.model, loaded.tokenizer, adapter)
    record = training.run_metrics(name, loaded.backend, config, result, before, after, dataset.HEADLINE_SPLIT)
    if ranks.distributed:
        record["distributed"] = {"mode": ranks.mode, **distributed.summarize(reports)}
    metrics = artifacts.save_json("train_metrics.json", record)
    say(f"adapter: {adapter}  metrics: {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
