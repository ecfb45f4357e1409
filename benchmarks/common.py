"""What every benchmark shares: where results go, and the machine/command header of each JSON file."""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

from slipcore_nb import whole_files

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"  # adapters, merged folders, GGUFs: large, git-ignored

# Nothing here may reach a hub, and Unsloth must never apt-get / git clone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_AUTO_INSTALL", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def results_dir(quick: bool) -> Path:
    """``benchmarks/results/`` for real runs; smoke runs (``--quick``) go to ``results/quick/`` instead."""
    path = BENCH_DIR / "results" / ("quick" if quick else "")
    path.mkdir(parents=True, exist_ok=True)
    return path


def work_dir(quick: bool) -> Path:
    path = WORK_DIR / ("quick" if quick else "full")
    path.mkdir(parents=True, exist_ok=True)
    return path


def command(module: str) -> str:
    """The command line that reproduces this run."""
    return shlex.join(["python", "-m", module, *sys.argv[1:]])


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(wall clock, busy CPU seconds of the whole machine, CPU seconds of this process and its reaped children).

    None where ``/proc/stat`` does not exist (not Linux).
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                               resource.getrusage(resource.RUSAGE_CHILDREN)))
    return time.monotonic(), machine, own


_STARTED = _cpu_seconds()


def other_processes_cores(since: tuple[float, float, float] | None = _STARTED) -> float | None:
    """Mean number of cores that *other* processes kept busy since ``since`` (default: since this benchmark started).

    The load average cannot tell: a benchmark that uses both cores pushes it to 2 by itself.
    """
    now = _cpu_seconds()
    if since is None or now is None or now[0] <= since[0]:
        return None
    wall, machine, own = (b - a for a, b in zip(since, now))
    return round(max(0.0, machine - own) / wall, 2)


def header(module: str) -> dict:
    """Machine, package versions, date and command: the first keys of every results file."""
    from slipcore_nb.environment import package_versions
    from slipcore_nb.machine import detect_hardware

    return {
        "benchmark": module.rsplit(".", 1)[-1],
        "command": command(module),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": detect_hardware().describe(),  # names the CPU model and its bf16/AMX flags
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": package_versions(),
    }


def stamp(data_dir: Path | str | None = None) -> dict:
    """The commit (and whether the tree had changes) and a sha256 over the data files, so a number names its inputs.

    ``data_dir``: the dataset the run read (default: the committed ``data/finetune``). The hash covers every
    ``*.jsonl`` there, name and bytes, in name order.
    """
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
        except OSError:  # no git on this machine
            return ""

    data_dir = Path(data_dir) if data_dir else REPO / "data" / "finetune"
    digest = hashlib.sha256()
    for path in sorted(data_dir.glob("*.jsonl")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return {"commit": git("rev-parse", "HEAD") or "unknown", "tree_changed": bool(git("status", "--porcelain")),
            "data": str(data_dir), "data_sha256": digest.hexdigest()}


def stamp_line(stamped: dict) -> str:
    """The stamp as the last line of a markdown table file."""
    return (f"_commit {stamped['commit'][:10]}{' (with uncommitted changes)' if stamped['tree_changed'] else ''}"
            f", data sha256 {stamped['data_sha256'][:12]}_")


def write_results(out_dir: Path, name: str, data: dict, markdown: str, *, data_dir: Path | str | None = None,
                  raw: dict | None = None) -> tuple[Path, Path]:
    """``{name}.json`` (every number) and ``{name}.md`` (the table), stamped; one row appended to ``runs.csv``.

    The stamp (:func:`stamp`: commit and data sha256, ``data_dir`` default the committed data) goes into the JSON as
    ``stamp`` (a benchmark that set its own keeps it) and under the table. ``raw``: per-answer records, written to
    ``raw/{name}.json`` beside the results (git-ignored), not into the committed JSON.
    """
    stamped = data.setdefault("stamp", stamp(data_dir))
    markdown = markdown.rstrip()
    if "data sha256" not in markdown:
        markdown += "\n\n" + stamp_line(stamped)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_text, md_text = json.dumps(data, indent=2, default=str) + "\n", markdown + "\n"
    for text in (json_text, md_text):  # a text UTF-8 cannot hold fails here, before either file of the pair changes
        text.encode("utf-8")
    whole_files.write_text(json_path, json_text)
    whole_files.write_text(md_path, md_text)
    print(f"wrote {json_path}\nwrote {md_path}")
    if raw is not None:
        raw_path = out_dir / "raw" / f"{name}.json"
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        whole_files.write_text(raw_path, json.dumps(raw, indent=1, default=str) + "\n")
        print(f"wrote {raw_path}")
    append_run(out_dir / LEDGER, ledger_row(data, files=f"{name}.json {name}.md"))
    return json_path, md_path


# The ledger: one row per run, the newest last (benchmarks/README.md says how to read it).
LEDGER = "runs.csv"
LEDGER_COLUMNS = ("date", "benchmark", "files", "machine", "commit", "recorded_in", "data_sha256", "model", "steps",
                  "learning_rate", "batch_size", "loraplus_ratio", "rank", "seed", "eval_split", "eval_n", "valid",
                  "protocol_correct", "key_metrics", "train_minutes", "minutes", "other_cores", "rerun", "command",
                  "note")


def _pct(value) -> str:
    return "" if value is None else f"{float(value):.1f}"


def ledger_row(data: dict, files: str = "", **extra) -> dict:
    """One ``runs.csv`` row from a results dict: who ran what where, on which commit and data, and its key numbers."""
    stamped = data.get("stamp") or {}
    cpu = data.get("cpu")  # older files kept the CPU model beside the machine line
    machine = data.get("machine") or ""
    if cpu and cpu not in machine:
        machine = f"{machine}: {cpu}"
    row = {"date": str(data.get("date", ""))[:16].replace("T", " "), "benchmark": data.get("benchmark", ""),
           "files": files, "machine": machine, "commit": str(stamped.get("commit", ""))[:10]
           + ("+changes" if stamped.get("tree_changed") else ""),
           "data_sha256": str(stamped.get("data_sha256", ""))[:12], "model": data.get("model", ""),
           "minutes": f"{data['seconds'] / 60:.1f}" if data.get("seconds") else "",
           "other_cores": data.get("other_processes_cores", ""), "command": data.get("command", ""),
           "rerun": "yes (same command)", "note": data.get("note", "")}
    row.update(_key_numbers(data))
    row.update({key: value for key, value in extra.items() if value is not None})
    return {column: row.get(column, "") for column in LEDGER_COLUMNS}


def _key_numbers(data: dict) -> dict:
    """The columns that differ by benchmark: settings and the numbers a reader compares runs by."""
    kind = data.get("benchmark")
    if kind == "quality_curve" and data.get("curve"):
        last, settings = data["curve"][-1], data.get("curve_settings", {})
        by_step = ", ".join(f"{p['steps']}: {_pct(p['protocol_correct'])}" for p in data["curve"])
        ranks = ", ".join(f"r{p['rank']} {_pct(p['protocol_correct'])}" for p in data.get("ranks", [])
                          if not p.get("reused_from_curve"))
        return {"steps": last["steps"], "learning_rate": settings.get("learning_rate", ""),
                "batch_size": settings.get("batch_size", ""), "loraplus_ratio": settings.get("loraplus_lr_ratio") or "",
                "rank": settings.get("rank", ""), "seed": settings.get("seed", ""), "eval_split": "eval_unseen",
                "eval_n": data.get("eval_examples", ""), "valid": _pct(last["valid"]),
                "protocol_correct": _pct(last["protocol_correct"]), "train_minutes": last.get("train_minutes", ""),
                "key_metrics": f"protocol-correct by step {by_step}" + (f"; own rank runs at {data.get('rank_steps')} "
                                                                        f"steps: {ranks}" if ranks else "")}
    if kind == "reliability" and data.get("orders"):
        orders = data["orders"]
        unseen = [o["messages"]["eval_unseen"] for o in orders if "eval_unseen" in o.get("messages", {})]
        trained = [o["settings"] for o in orders if "seed" in o["settings"]]
        how = ", ".join(f"seed {o['settings']['seed']}" if "seed" in o["settings"]
                        else f"adapter {o['settings'].get('adapter')}" for o in orders)
        clean = "; ".join(f"{how_}: " + ", ".join(f"{mode} {c['completed_clean']}/{c['conversations']}"
                                                 for mode, c in o.get("conversations", {}).items())
                          for how_, o in zip(how.split(", "), orders))
        return {"steps": "/".join(str(s.get("max_steps", "")) for s in trained),
                "learning_rate": "/".join(str(s.get("learning_rate", "")) for s in trained),
                "batch_size": "/".join(str(s.get("batch_size", "")) for s in trained),
                "loraplus_ratio": "/".join(str(s.get("loraplus_lr_ratio", "")) for s in trained),
                "rank": "/".join(str(s.get("rank", "")) for s in trained), "seed": how, "eval_split": "eval_unseen",
                "eval_n": "/".join(str(u.get("n", "")) for u in unseen),
                "valid": "/".join(_pct(u["valid"]) for u in unseen),
                "protocol_correct": "/".join(_pct(u["protocol_correct"]) for u in unseen),
                "train_minutes": "/".join(str(s.get("train_minutes", "")) for s in trained),
                "key_metrics": f"06's conversations clean: {clean}"}
    if kind in ("serving", "quantization", "role_adapters"):
        variants = data.get("variants") or data.get("files") or {}
        best = data.get("best_variant") or data.get("recommended")
        row = {"eval_split": data.get("split", ""), "eval_n": data.get("prompts", "")}
        if best in variants:
            row.update(valid=_pct(variants[best].get("valid")),
                       protocol_correct=_pct(variants[best].get("protocol_correct")))
        if kind == "serving":
            row["key_metrics"] = (f"best: {best}, {data.get('best_messages_per_second')} msg/s, "
                                  f"{data.get('best_vs_baseline')}x the one-stream baseline "
                                  f"({data.get('baseline_messages_per_second')} msg/s)")
        elif kind == "quantization":
            row["key_metrics"] = f"recommended {best}; " + ", ".join(
                f"{name} {f.get('megabytes')} MB pc {_pct(f.get('protocol_correct'))}" for name, f in variants.items())
        else:
            row.update(steps=data.get("shared_steps", ""), rank=data.get("rank", ""),
                       key_metrics="protocol-correct: " + ", ".join(
                           f"{name} {_pct(v.get('protocol_correct'))} ({v.get('messages_per_second')} msg/s)"
                           for name, v in variants.items()))
        return row
    if kind == "speed":
        parts = []
        training = data.get("training") or {}
        if training.get("unsloth_over_transformers"):
            parts.append(f"training: Unsloth {training['unsloth_over_transformers']}x transformers")
        for name, run in (training.get("runs") or {}).items():
            if run.get("tokens_per_second"):
                parts.append(f"{name} {run['tokens_per_second']} tok/s")
        for name, gen in ((data.get("generation") or {}).get("rows") or {}).items():
            if gen.get("messages_per_second") is not None:
                parts.append(f"{name} {gen['messages_per_second']} msg/s pc {_pct(gen.get('protocol_correct'))}")
            elif gen.get("error"):
                parts.append(f"{name}: failed")
        if (data.get("notebooks") or {}).get("total_seconds"):
            parts.append(f"notebooks 01-05 (tiny) {data['notebooks']['total_seconds']} s")
        return {"key_metrics": "; ".join(parts)}
    if kind == "token_economics":
        return {"key_metrics": "; ".join(f"{name}: {t['overall'].get('saved vs compact %')} % fewer than compact "
                                         f"JSON, {t['overall'].get('saved vs verbose %')} % than verbose"
                                         for name, t in (data.get("tokenizers") or {}).items() if "overall" in t)}
    if kind == "run_all":
        return {"minutes": data.get("total_minutes", ""),
                "key_metrics": ", ".join(f"{name} {r.get('minutes')} min (exit {r.get('exit_code')})"
                                         for name, r in (data.get("runs") or {}).items())}
    return {}


def append_run(path: Path, row: dict) -> None:
    """Add one row to the ledger (a header first when the file is new); never rewrites earlier rows."""
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
    if not before.strip():
        writer.writeheader()
    writer.writerow({column: row.get(column, "") for column in LEDGER_COLUMNS})
    if before and not before.endswith("\n"):
        before += "\n"
    whole_files.write_text(path, before + text.getvalue())


def md_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub markdown table from dict rows (floats to one decimal)."""
    columns = columns or list(rows[0])

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def finish(data: dict) -> None:
    """Record how busy the machine was while the benchmark ran (call it last, before the markdown)."""
    data["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    data["other_processes_cores"] = other_processes_cores()


def footer(data: dict) -> str:
    """The provenance line under each markdown table, after a warning if other processes competed for the CPU."""
    others = data.get("other_processes_cores")
    warning = ""
    if others is not None and others > 0.25:
        warning = (f"\n**Warning**: other processes kept {others:.1f} of {data.get('cpu_count')} cores busy "
                   "during this run: its timings are inflated; rerun on an idle machine.\n")
    return (f"{warning}\n_{data['machine']}; torch {data['packages'].get('torch')}, unsloth {data['packages'].get('unsloth')}, "
            f"transformers {data['packages'].get('transformers')}; {data['date'][:10]}; "
            f"`{data['command']}`_\n")
