"""Reliability as an agent builder meets it: per split, role, move and field, and conversations clean per decoding.

    python -m benchmarks.reliability [--quick] [--seeds 1,2] [--adapter DIR] [--steps N] [--eval-limit N]

For each batch order (``--seeds``: one training run each at the model's defaults; ``--adapter``: an
adapter already trained, e.g. ``outputs/lora`` from ``make demo``, counted as one more order):

1. **Messages** (PyTorch, greedy): the held-out splits ``eval_unseen`` (held-out goals and wording),
   ``eval`` (held-out goals, training wording) and ``eval_guide`` (the guide's one-line style), scored
   per role, per move and per field (act/frame, turn, conv, src/dst, ids, rules).
2. **Conversations** (llama-server, f16 GGUF of the same adapter): notebook 06's 16 conversations
   (held-out goals, unseen wording, 4 slots) decoded free, under nSLIP's grammar and under the state
   grammar; conversations clean, messages protocol-correct and messages per second for each.

The result is stamped with the commit and a hash of the data files it read. Writes
``results/reliability.{json,md}`` (``--quick``: the tiny model, a few steps, 2 conversations, into
``results/quick/``).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

from slipcore_nb.agents import DECODING as MODES
from slipcore_nb.arguments import count, counts, file_part, folder, model_name, out_folder
from slipcore_nb.conversations import MOVES, ROLES

from .common import finish, footer, header, md_table, results_dir, stamp, stamp_line, work_dir, write_results

MODULE = "benchmarks.reliability"
SPLITS = ("eval_unseen", "eval", "eval_guide")
FIELDS = ("act_frame", "turn", "conv", "src_dst", "ids", "rules")


def messages(loaded, data_dir: Path, eval_limit: int | None, log) -> dict:
    """Every held-out split scored: overall, per role, per move, per field."""
    from slipcore_nb import dataset, evaluate

    out = {}
    for split in SPLITS:
        examples = dataset.load_split(split, data_dir)[:eval_limit]
        began = time.perf_counter()
        report = evaluate.evaluate(loaded.model, loaded.tokenizer, examples)
        table = report.table
        out[split] = {"n": len(examples), **report.summary(),
                      "per_role": {role: {"n": int(table.loc[role, "n"]),
                                          "protocol_correct": float(table.loc[role, "protocol_correct"])}
                                   for role in table.index if role != "overall"},
                      "per_move": report.by_move(), "seconds": round(time.perf_counter() - began, 1),
                      "wrong": [{k: row[k] for k in ("role", "answer", "target")}
                                for row in report.rows if not row["protocol_correct"]]}
        log(f"  {split}: valid {out[split]['valid']}, protocol-correct {out[split]['protocol_correct']} "
            f"({len(examples)} messages, {out[split]['seconds']} s)")
    return out


def conversations(loaded, work: Path, count: int, log) -> dict:
    """Notebook 06's conversations through llama-server, once per decoding mode, on a cold server each."""
    from slipcore_nb import agents, dataset, export, llama_server
    from slipcore_nb.completions import CompletionsClient

    merged = export.merge_to_16bit(loaded.model, loaded.tokenizer, work / "merged")
    gguf = export.to_gguf(merged.path, work / "gguf", types=("f16",), name="reliability")["f16"].path
    llama_server.build()
    goals = dataset.held_out_goals()[:count]
    out = {}
    with llama_server.LlamaServer(gguf, parallel=4, ctx_per_slot=512) as server, \
            CompletionsClient(server.base_url) as client:
        for mode in MODES:
            server.restart()  # a cold prompt cache for every mode: msg/s compare like for like
            report = agents.Agents(client, decoding=mode).run(goals, seed=0, workers=server.parallel)
            table = report.scores.table
            out[mode] = {**report.summary(),
                         "per_role": {role: float(table.loc[role, "protocol_correct"])
                                      for role in table.index if role != "overall"},
                         "wrong": report.wrong().to_dict(orient="records")}
            log(f"  {mode}: {out[mode]['completed_clean']} of {count} clean, protocol-correct "
                f"{out[mode]['protocol_correct']} %, {out[mode]['messages_per_second']} msg/s")
    return out


def one_order(model: str, seed: int | None, adapter: Path | None, steps: int | None, data_dir: Path,
              eval_limit: int | None, count: int, work: Path, log) -> dict:
    """Train (or load ``adapter``), then score messages and conversations."""
    from slipcore_nb import dataset, loading, training

    if adapter is not None:
        loaded = loading.load_trained(adapter, model)
        settings = {"adapter": str(adapter)}
    else:
        loaded = loading.load_model(model)
        train = dataset.load_split("train", data_dir)
        config = training.TrainConfig.from_spec(loaded.spec, max_steps=steps, output_dir=work / "checkpoints",
                                                seed=seed)
        result = training.train(training.make_trainer(loaded, train, config),
                                training.start_run(config, train, fresh=True))
        if result.interrupted:
            raise KeyboardInterrupt
        settings = {"seed": seed, "max_steps": config.max_steps, "learning_rate": config.learning_rate,
                    "rank": config.lora_rank, "batch_size": config.batch_size,
                    "loraplus_lr_ratio": config.loraplus_lr_ratio, "backend": loaded.backend,
                    "train_minutes": round(result.seconds / 60, 1)}
        log(f"  trained {config.max_steps} steps in {settings['train_minutes']} min")
    row = {"settings": settings, "messages": messages(loaded, data_dir, eval_limit, log),
           "conversations": conversations(loaded, work, count, log)}
    del loaded
    gc.collect()
    return row


def spread(values: list[float]) -> str:
    """``mean (min-max)`` of one number over batch orders, the number for one order, ``—`` for none."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def markdown(data: dict) -> str:
    orders = data["orders"]
    n = len(orders)
    rows = []
    for split in SPLITS:
        first = orders[0]["messages"][split]
        rows.append({"split": split, "messages": first["n"],
                     **{check: spread([o["messages"][split][check] for o in orders])
                        for check in ("valid", "protocol_correct", *FIELDS)}})
    roles = [role for role in ROLES if any(role in o["messages"][split]["per_role"] for o in orders for split in SPLITS)]
    role_rows = [{"split": split, **{role: spread([o["messages"][split]["per_role"][role]["protocol_correct"]
                                                  for o in orders if role in o["messages"][split]["per_role"]])
                                     for role in roles}} for split in SPLITS]
    moves = [move for move in MOVES if any(move in o["messages"][split]["per_move"] for o in orders for split in SPLITS)]
    move_rows = [{"move": move, **{split: spread([o["messages"][split]["per_move"][move]["protocol_correct"]
                                                  for o in orders if move in o["messages"][split]["per_move"]])
                                   for split in SPLITS}} for move in moves]
    count = orders[0]["conversations"]["free"]["conversations"]
    mode_rows = [{"decoding": mode,
                  "conversations clean": spread([o["conversations"][mode]["completed_clean"] for o in orders]),
                  "protocol-correct": spread([o["conversations"][mode]["protocol_correct"] for o in orders]),
                  "valid": spread([o["conversations"][mode]["valid"] for o in orders]),
                  "msg/s": spread([o["conversations"][mode]["messages_per_second"] for o in orders])}
                 for mode in MODES]
    how = ", ".join(f"seed {o['settings']['seed']}" if "seed" in o["settings"] else f"adapter {o['settings']['adapter']}"
                    for o in orders)
    lines = [f"### Reliability: {data['model']}, {n} batch order{'s' if n > 1 else ''} ({how})", "",
             "Rates in %, mean (min-max) over the orders. **Messages**: greedy answers to every held-out split.", "",
             md_table(rows), "", "Protocol-correct per role:", "", md_table(role_rows), "",
             "Protocol-correct per move (the target's move):", "", md_table(move_rows), "",
             f"**Conversations** (notebook 06: {count} conversations, 4 llama-server slots, f16 GGUF): clean = every "
             "message right as sent. `state` is the runtime's knowledge (state grammar), not the model's: "
             "the free row is the model's own.", "", md_table(mode_rows), "", stamp_line(data["stamp"])]
    lines.append(footer(data))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 8 steps, 8 messages per split, "
                                                             "2 conversations")
    parser.add_argument("--model", type=model_name, help="registry name (default smollm2-135m; tiny with --quick)")
    parser.add_argument("--seeds", type=counts(0), default=None,
                        help="batch orders to train, comma-separated (default 1,2; none with --adapter unless given)")
    parser.add_argument("--adapter", type=folder, help="also score this trained LoRA adapter (e.g. outputs/lora)")
    parser.add_argument("--steps", type=count(), help="training steps (default: the model's registry entry)")
    parser.add_argument("--eval-limit", type=count(), help="score the first N messages of each split (default all)")
    parser.add_argument("--conversations", type=count(), help="conversations per decoding mode (default 16)")
    parser.add_argument("--data", type=folder, help="dataset folder (default: the committed data/finetune)")
    parser.add_argument("--out-suffix", type=file_part, default="", help="results/reliability<SUFFIX>.{json,md}")
    parser.add_argument("--out", type=out_folder, help="folder for the result files (default: benchmarks/results, "
                                                 "results/quick with --quick)")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else ([] if args.adapter else [1, 2])
    if args.adapter is not None and not (args.adapter / "adapter_config.json").is_file():
        parser.error(f"argument --adapter: no adapter_config.json in {args.adapter} (train one with 03 or make demo)")

    from slipcore_nb import dataset

    quick = args.quick
    model = args.model or ("tiny" if quick else "smollm2-135m")
    steps = args.steps or (8 if quick else None)
    eval_limit = args.eval_limit or (8 if quick else None)
    talks = args.conversations or (2 if quick else 16)
    data_dir = args.data or dataset.DATA_DIR
    data = header(MODULE)
    data.update(model=model, stamp=stamp(data_dir), eval_limit=eval_limit, orders=[])
    out, work = args.out or results_dir(quick), work_dir(quick) / "reliability"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(text: str) -> None:
        print(text, flush=True)

    plan = ([(None, args.adapter)] if args.adapter else []) + [(seed, None) for seed in seeds]
    for seed, adapter in plan:
        log(f"reliability: {model}, " + (f"adapter {adapter}" if adapter else f"seed {seed}"))
        data["orders"].append(one_order(model, seed, adapter, steps, data_dir, eval_limit, talks, work, log))
    data["seconds"] = round(time.perf_counter() - started, 1)
    finish(data)
    write_results(out, f"reliability{args.out_suffix}", data, markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
