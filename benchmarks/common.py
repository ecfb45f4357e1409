"""What every benchmark shares: where results go, and the machine/command header of each JSON file."""

from __future__ import annotations

import datetime as _dt
import json
import os
import resource
import shlex
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
    from slipcore_nb.models import detect_hardware

    return {
        "benchmark": module.rsplit(".", 1)[-1],
        "command": command(module),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": detect_hardware().describe(),  # names the CPU model and its bf16/AMX flags
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": package_versions(),
    }


def write_results(out_dir: Path, name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """``{name}.json`` (everything) and ``{name}.md`` (the table for the README)."""
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    whole_files.write_text(json_path, json.dumps(data, indent=2, default=str) + "\n")
    whole_files.write_text(md_path, markdown.rstrip() + "\n")
    print(f"wrote {json_path}\nwrote {md_path}")
    return json_path, md_path


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
