"""Run the numbered notebooks headless, in order, and keep executed copies (``make demo``).

Each notebook runs in a fresh kernel, exactly as a user who opens it on its own would; what one
writes under ``SLIPCORE_OUTPUT_DIR`` is what the next one reads.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from .artifacts import REPO, output_dir

NOTEBOOKS_DIR = REPO / "notebooks"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, executed_dir: Path, timeout: int = 3600) -> float:
    """Execute one notebook in a fresh kernel; write the executed copy; return wall seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        executed_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed_dir / path.name)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slipcore_nb.runner", description=__doc__)
    parser.add_argument("names", nargs="*", help="notebook name prefixes to run (default: all, in order)")
    args = parser.parse_args(argv)
    selected = [nb for nb in notebooks() if not args.names or any(nb.name.startswith(n) for n in args.names)]
    if not selected:
        raise SystemExit(f"no notebooks matching {args.names or '*'} in {NOTEBOOKS_DIR}")
    executed_dir = output_dir() / "executed"
    print(f"model: {os.environ.get('SLIPCORE_MODEL', 'default for this machine')}; executed copies -> {executed_dir}")
    for nb in selected:
        print(f"running {nb.name} ...", flush=True)
        seconds = run_notebook(nb, executed_dir)
        print(f"  done in {seconds:.0f} s -> {executed_dir / nb.name}", flush=True)


if __name__ == "__main__":
    main()
