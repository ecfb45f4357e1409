"""Quality curve: how well the model speaks nSLIP after 0, 25, 50, 100 and 200 LoRA steps, and per LoRA rank.

    python -m benchmarks.quality_curve [--quick] [--eval-limit N]

One training run to the last step count (registry defaults: lr and batch of the model, LoRA r16,
Unsloth's path), evaluated with :func:`slipcore_nb.evaluate.evaluate` on the unseen-wording split (held-out goals and wording) at
each step count from a TrainerCallback, so every point is the same run seen mid-way. Then ranks
8/16/32 are trained to ``--rank-steps`` each (a run to 100 steps decays its learning rate to zero at
100, so it is not the curve's 100-step point: it is run unless the settings are the same).
Training minutes exclude evaluation time. Writes ``results/quality_curve.{json,md,png}`` (each point's
wrong answers in ``results/raw/quality_curve.json``, git-ignored) and keeps the curve's final adapter in
``benchmarks/.work/`` for :mod:`benchmarks.speed`.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

from slipcore_nb.arguments import count, counts, file_part, folder, model_name, positive_number

from .common import finish, footer, header, md_table, results_dir, work_dir, write_results

MODULE = "benchmarks.quality_curve"
SHOWN = ("valid", "protocol_correct", "valid_but_wrong", "rules", "exact")


class EvalAt:
    """A TrainerCallback that evaluates the model in training at the given step counts.

    ``evaluate`` switches the model to eval mode and back; the time it takes is kept apart so the
    training minutes are training only.
    """

    def __init__(self, loaded, examples, steps, on_point):
        self.loaded, self.examples, self.steps, self.on_point = loaded, examples, set(steps), on_point
        self.eval_seconds = 0.0
        self.train_start = None

    def as_callback(self):
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                outer.train_start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step in outer.steps:
                    outer.evaluate_now(state.global_step)

        return _Callback()

    def evaluate_now(self, step: int) -> None:
        from slipcore_nb import evaluate

        start = time.perf_counter()
        report = evaluate.evaluate(self.loaded.model, self.loaded.tokenizer, self.examples)
        seconds = time.perf_counter() - start
        train_seconds = (start - self.train_start - self.eval_seconds) if self.train_start else 0.0
        self.eval_seconds += seconds
        self.on_point(step, report, train_seconds, seconds)


def point(step: int, report, train_seconds: float, eval_seconds: float, **extra) -> dict:
    """One row: every check of :data:`slipcore_nb.evaluate.CHECKS` (overall, %), per-role rates, times."""
    from slipcore_nb.evaluate import CHECKS

    table = report.table
    return {
        "steps": step, **extra, **report.summary(),
        "per_role": {role: {c: float(table.loc[role, c]) for c in CHECKS} for role in table.index if role != "overall"},
        "per_move": report.by_move(),
        "train_minutes": round(train_seconds / 60, 2), "eval_seconds": round(eval_seconds, 1),
        "examples": len(report.rows),
        # The wrong answers themselves (main() moves them to results/raw/, out of git).
        "wrong": [{key: row[key] for key in ("role", "answer", "target")}
                  for row in report.rows if not row["protocol_correct"]],
    }


def run(model: str, examples: list[dict], train: list[dict], max_steps: int, rank: int, eval_steps: list[int],
        out_root, lr: float | None, overrides: dict, log) -> tuple[list[dict], object, dict]:
    """Load, train ``max_steps`` with evaluations at ``eval_steps`` (0 = before training), return the points.

    ``overrides`` replaces :class:`~slipcore_nb.training.TrainConfig` fields (batch size, LoRA+ ratio)."""
    from slipcore_nb import loading, training

    loaded = loading.load_model(model, lora_rank=rank)
    config = training.TrainConfig.from_spec(loaded.spec, max_steps=max_steps, lora_rank=rank, learning_rate=lr,
                                            output_dir=out_root, **overrides)
    points: list[dict] = []

    def on_point(step, report, train_seconds, eval_seconds):
        points.append(point(step, report, train_seconds, eval_seconds, rank=rank))
        log(f"  r{rank} step {step:>4}: " + ", ".join(f"{c} {report.rate(c):.1f}" for c in SHOWN)
            + f"  (train {train_seconds / 60:.1f} min, eval {eval_seconds:.0f} s)")

    evaluator = EvalAt(loaded, examples, [s for s in eval_steps if s > 0], on_point)
    if 0 in eval_steps:
        evaluator.evaluate_now(0)
        evaluator.eval_seconds = 0.0
    trainer = training.make_trainer(loaded, train, config, callbacks=(evaluator.as_callback(),))
    result = training.train(trainer, training.start_run(config, train, fresh=True))
    if result.interrupted:
        raise KeyboardInterrupt
    settings = {"model": loaded.spec.name, "backend": loaded.backend, "backend_note": loaded.note,
                "max_steps": config.max_steps, "rank": config.lora_rank, "lora_alpha": loaded.lora["lora_alpha"],
                "learning_rate": config.learning_rate, "batch_size": config.batch_size,
                "grad_accum": config.grad_accum, "warmup_steps": config.warmup_steps, "seed": config.seed,
                "loraplus_lr_ratio": config.loraplus_lr_ratio,
                "scheduler": "linear", "train_seconds_total": round(result.seconds - evaluator.eval_seconds, 1),
                "loss_history": result.loss_history}
    return points, loaded, settings


def plot(curve: list[dict], ranks: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [p["steps"] for p in curve]
    for check, style in (("valid", "o-"), ("protocol_correct", "s-")):
        ax.plot(steps, [p[check] for p in curve], style, label=f"{check} (r{curve[0]['rank']}, one run)")
    for p in ranks:
        ax.plot(p["steps"], p["protocol_correct"], "x", markersize=9, label=f"protocol_correct r{p['rank']} (own run)")
    ax.set_xlabel("training steps")
    ax.set_ylabel("% of held-out examples")
    ax.set_ylim(-3, 103)
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny model, steps 0,4,8, ranks 8/16 at 4 steps, 8 eval examples")
    parser.add_argument("--model", type=model_name, help="registry name (default smollm2-135m; tiny with --quick)")
    parser.add_argument("--steps", type=counts(0), help="step counts of the curve, comma-separated (default 0,25,50,100,200)")
    parser.add_argument("--ranks", type=counts(1), help="LoRA ranks to compare (default 8,16,32)")
    parser.add_argument("--rank-steps", type=count(), help="steps of each rank run (default 100)")
    parser.add_argument("--curve-rank", type=count(), default=16, help="LoRA rank of the curve (default 16)")
    parser.add_argument("--lr", type=positive_number, help="learning rate (default: the model's registry entry)")
    parser.add_argument("--batch-size", type=count(), help="rows per step (default: the model's registry entry)")
    parser.add_argument("--loraplus-ratio", type=positive_number,
                        help="LoRA+: train the B matrices at this multiple of the learning rate "
                             "(default: the model's registry entry)")
    parser.add_argument("--seed", type=count(0), help="the trainer's seed, so the order of the batches (default: "
                                                 "TrainConfig's); another seed measures run-to-run spread")
    parser.add_argument("--eval-limit", type=count(), help="evaluate on the first N eval examples (default all 200)")
    parser.add_argument("--data", type=folder, help="dataset folder to train and evaluate on, e.g. a candidate written by "
                                       "`python -m slipcore_nb.dataset --out DIR` (default: the committed data)")
    parser.add_argument("--out-suffix", type=file_part, default="",
                        help="results/quality_curve<SUFFIX>.{json,md,png}, so a variant keeps the committed files")
    args = parser.parse_args(argv)
    quick = args.quick
    model = args.model or ("tiny" if quick else "smollm2-135m")
    curve_steps = args.steps or ([0, 4, 8] if quick else [0, 25, 50, 100, 200])
    ranks = args.ranks or ([8, 16] if quick else [8, 16, 32])
    if max(curve_steps) < 1:
        parser.error(f"argument --steps: {curve_steps} trains nothing; the last step count must be at least 1")
    rank_steps = args.rank_steps or (4 if quick else 100)
    eval_limit = args.eval_limit or (8 if quick else None)
    overrides = {key: value for key, value in (("batch_size", args.batch_size),
                                               ("loraplus_lr_ratio", args.loraplus_ratio)) if value}
    if args.seed is not None:
        overrides["seed"] = args.seed

    from slipcore_nb import dataset, export

    data = header(MODULE)
    out, work = results_dir(quick), work_dir(quick)
    train = dataset.load_split("train", args.data)
    examples = dataset.load_split(dataset.HEADLINE_SPLIT, args.data)[:eval_limit]
    started = time.perf_counter()

    def log(text):
        print(text, flush=True)

    log(f"quality curve: {model}, steps {curve_steps}, rank {args.curve_rank}, {len(examples)} eval examples")
    curve, loaded, curve_settings = run(model, examples, train, max(curve_steps), args.curve_rank, curve_steps,
                                        work / "checkpoints-curve", args.lr, overrides, log)
    guide = guide_answer(loaded)
    log(f"the guide's prompt -> {guide['answer']} ({'right' if guide['right'] else 'wrong'})")
    adapter = export.save_adapter(loaded.model, loaded.tokenizer, work / "curve-lora")
    del loaded
    gc.collect()

    rank_points = []
    for rank in ranks:
        same = rank == args.curve_rank and rank_steps == max(curve_steps)
        if same:
            log(f"rank {rank}: the curve's last point has the same settings; reused")
            rank_points.append({**curve[-1], "reused_from_curve": True})
            continue
        log(f"rank {rank}: own run of {rank_steps} steps")
        points, loaded, settings = run(model, examples, train, rank_steps, rank, [rank_steps],
                                       work / f"checkpoints-rank{rank}", args.lr, overrides, log)
        rank_points.append({**points[-1], "reused_from_curve": False,
                            "train_seconds_total": settings["train_seconds_total"],
                            "trainable_parameters": _trainable(loaded.model)})
        del loaded
        gc.collect()

    data.update(model=model, data=str(args.data or dataset.DATA_DIR), eval_examples=len(examples),
                curve_settings=curve_settings, curve=curve, guide_prompt=guide,
                ranks=rank_points, rank_steps=rank_steps,
                rank_note=("each rank is its own run to rank_steps (its linear schedule ends there), so the "
                           "curve's point at the same step count, mid-way through a longer schedule, is not reused"),
                curve_adapter=str(adapter.path), seconds=round(time.perf_counter() - started, 1))
    finish(data)

    name = f"quality_curve{args.out_suffix}"
    columns = ["steps", *SHOWN, "act_frame", "turn", "conv", "ids", "src_dst", "train_minutes"]
    md = [f"### Quality curve: {model} learning nSLIP", "",
          f"One LoRA run (r{args.curve_rank}, lr {curve_settings['learning_rate']:g}, batch "
          f"{curve_settings['batch_size']}, "
          + (f"LoRA+ ratio {curve_settings['loraplus_lr_ratio']:g}, " if curve_settings["loraplus_lr_ratio"] else "")
          + f"{curve_settings['backend']} backend) evaluated on "
          f"{len(examples)} held-out examples in unseen wording at each step count; rates in %, `train_minutes` is cumulative "
          "training time without evaluation.", "",
          md_table(curve, columns), "",
          f"**LoRA rank at {rank_steps} steps** (each its own {rank_steps}-step run, same lr and batch):", "",
          md_table(rank_points, ["rank", *SHOWN, "train_minutes"]), "",
          f"The guide's prompt `{guide['prompt']}` after the curve's last step: `{guide['answer']}` "
          f"({'the one right answer' if guide['right'] else 'wrong'}).", "",
          f"![quality curve]({name}.png)"]
    md.append(footer(data))
    # The wrong answers go beside the results, out of git: which field a change fixes or breaks is read off them.
    raw = {"curve": {p["steps"]: p.pop("wrong") for p in curve},
           "ranks": {p["rank"]: p.pop("wrong") for p in rank_points if "wrong" in p}}
    write_results(out, name, data, "\n".join(md), data_dir=args.data or dataset.DATA_DIR, raw=raw)
    plot(curve, [p for p in rank_points if not p["reused_from_curve"]], out / f"{name}.png",
         f"{model}: valid / protocol_correct on {len(examples)} held-out examples")
    return 0


def guide_answer(loaded) -> dict:
    """The curve's final adapter asked the guide's own example prompt (greedy), and whether it is the one right answer."""
    from slipcore_nb import evaluate
    from slipcore_nb.conversations import GUIDE_ANSWER, GUIDE_PROMPT
    from slipcore_nb.prompts import PROMPT

    raw = evaluate.generate(loaded.model, loaded.tokenizer, [PROMPT.prompt(GUIDE_PROMPT)], max_new_tokens=48)
    answer = evaluate.clean_answer(raw[0], loaded.tokenizer.eos_token)
    return {"prompt": GUIDE_PROMPT, "answer": answer, "right": answer == GUIDE_ANSWER}


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


if __name__ == "__main__":
    sys.exit(main())
