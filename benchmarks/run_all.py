"""Every benchmark, one after another, each in its own process (``make bench``).

    python -m benchmarks.run_all [--quick] [--only token_economics,quality_curve,speed,reliability]

Order matters: ``quality_curve`` keeps its trained adapter, which ``speed`` then exports and serves
(unless notebooks 03-04 already exported a model of the same name). Each benchmark runs in a fresh
process because importing unsloth patches TRL for the whole process. Results land in
``benchmarks/results/`` (``results/quick/`` with ``--quick``); ``results/summary.md`` joins the tables;
each benchmark and the whole run add a row to ``results/runs.csv``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from slipcore_nb import whole_files
from slipcore_nb.arguments import count, names

from .common import LEDGER, REPO, append_run, finish, header, ledger_row, results_dir, stamp

MODULE = "benchmarks.run_all"
BENCHMARKS = ("token_economics", "quality_curve", "speed", "reliability")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of every benchmark (a few minutes)")
    parser.add_argument("--only", type=names(BENCHMARKS), default=list(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--eval-limit", type=count(), help="passed to quality_curve: evaluate on the first N eval examples")
    parser.add_argument("--rank-steps", type=count(), help="passed to quality_curve: steps of each LoRA-rank run (default 100)")
    args = parser.parse_args(argv)
    passed = {"quality_curve": [*(["--eval-limit", str(args.eval_limit)] if args.eval_limit else []),
                                *(["--rank-steps", str(args.rank_steps)] if args.rank_steps else [])]}
    selected = args.only
    out = results_dir(args.quick)
    data = header(MODULE)
    data["stamp"] = stamp()
    data["runs"] = {}
    failed = []
    for name in selected:
        cmd = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if args.quick else []), *passed.get(name, [])]
        print(f"=== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO)
        minutes = round((time.perf_counter() - start) / 60, 1)
        data["runs"][name] = {"exit_code": done.returncode, "minutes": minutes}
        print(f"=== {name}: exit {done.returncode} after {minutes} min", flush=True)
        if done.returncode != 0:
            failed.append(name)
    data["total_minutes"] = round(sum(r["minutes"] for r in data["runs"].values()), 1)
    finish(data)
    whole_files.write_text(out / "run_all.json", json.dumps(data, indent=2) + "\n")
    tables = [(out / f"{name}.md").read_text() for name in selected if (out / f"{name}.md").is_file()]
    whole_files.write_text(out / "summary.md", "\n\n".join(tables))
    append_run(out / LEDGER, ledger_row(data, files="run_all.json summary.md"))
    print(f"total {data['total_minutes']} min; wrote {out / 'run_all.json'} and {out / 'summary.md'}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
