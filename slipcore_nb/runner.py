"""Run the numbered notebooks headless, in order, and keep executed copies (``make demo``).

Each notebook runs in a fresh kernel, exactly as a user who opens it on its own would; what one
writes under ``SLIPCORE_OUTPUT_DIR`` is what the next one reads. When a cell fails or the kernel
dies, the run stops with one message naming the notebook, the cell, how it ended and its last output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .arguments import notebook_prefix
from .artifacts import NOTEBOOKS_DIR, notebooks, output_dir
from .native import describe_exit


class NotebookFailed(RuntimeError):
    """A notebook stopped: a cell raised, or its kernel died. The message says where and how."""


def last_output(cell, lines: int = 8) -> str:
    """The end of what a cell printed (streams, then error text), for a failure message."""
    texts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            texts.append(output.get("text", ""))
        elif output.get("output_type") == "error":
            texts.append(f"{output.get('ename')}: {output.get('evalue')}")
    tail = "".join(texts).strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else "(nothing)"


def _is_progress(line: str) -> bool:
    """A tqdm progress bar (Trainer, datasets, evaluation): stderr by design, not a warning."""
    return "%|" in line or line.rstrip().endswith(("it/s]", "s/it]", "examples/s]"))


def stderr_lines(nb) -> list[tuple[int, str]]:
    """(cell number, line) for every stderr line of an executed notebook that is not a progress bar.

    An executed notebook should show a user nothing on stderr they cannot act on; ``make demo`` lists
    what it finds, so a new warning is noticed the day it appears.
    """
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = output.get("text", "").replace("\r", "\n").split("\n")
                found += [(index + 1, line) for line in lines if line.strip() and not _is_progress(line)]
    return found


def failure_message(path: Path, nb, cell_index: int, how: str, executed_dir: Path) -> str:
    cell = nb.cells[cell_index]
    first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
    return (f"{path.name}: {how} in cell {cell_index + 1} of {len(nb.cells)} (`{first_line[:80]}`).\n"
            f"Its last output:\n{last_output(cell)}\n"
            f"The executed copy, with every output up to there, is in {executed_dir / path.name}.")


def run_notebook(path: Path, executed_dir: Path, timeout: int = 3600):
    """Execute one notebook in a fresh kernel; write the executed copy; return it and the wall seconds.

    Raises :class:`NotebookFailed` when a cell raises or the kernel dies (nbclient notices a dead
    kernel within about a second, so a crash in native code never leaves the run waiting).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)
    # Unix sockets, not TCP on loopback: a local kernel needs no port, and ipykernel warns on
    # stderr about unencrypted TCP for every kernel it starts. The socket path is absolute, since
    # the kernel runs in the notebook's folder and the client here.
    sockets = Path(tempfile.mkdtemp(prefix="slipcore-kernel-"))
    ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel")}})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", config=ipc,
                            resources={"metadata": {"path": str(path.parent)}})
    running: dict = {}

    def remember(cell, cell_index, **_):
        running["index"] = cell_index
        provisioner = getattr(client.km, "provisioner", None)
        running["process"] = getattr(provisioner, "process", None)  # the kernel's Popen, for its exit status

    client.on_cell_execute = remember
    start = time.perf_counter()
    try:
        client.execute()
    except DeadKernelError:
        process = running.get("process")
        code = process.poll() if process is not None else None
        raise NotebookFailed(failure_message(path, nb, running.get("index", 0),
                                             f"the kernel died ({describe_exit(code)})", executed_dir)) from None
    except CellExecutionError as error:
        raise NotebookFailed(failure_message(path, nb, running.get("index", 0),
                                             f"{error.ename} was raised", executed_dir)) from None
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        executed_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, executed_dir / path.name)
    return nb, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slipcore_nb.runner", description=__doc__)
    parser.add_argument("names", nargs="*", type=notebook_prefix, help="notebook name prefixes to run (default: all, in order)")
    args = parser.parse_args(argv)
    selected = [nb for nb in notebooks() if not args.names or any(nb.name.startswith(n) for n in args.names)]
    if not selected:
        raise SystemExit(f"no notebooks matching {args.names or '*'} in {NOTEBOOKS_DIR}")
    executed_dir = output_dir() / "executed"
    print(f"model: {os.environ.get('SLIPCORE_MODEL', 'default for this machine')}; executed copies -> {executed_dir}")
    for nb in selected:
        print(f"running {nb.name} ...", flush=True)
        try:
            executed, seconds = run_notebook(nb, executed_dir)
        except NotebookFailed as failure:
            print(f"FAILED: {failure}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        print(f"  done in {seconds:.0f} s -> {executed_dir / nb.name}", flush=True)
        for cell, line in stderr_lines(executed):
            print(f"  stderr in cell {cell}: {line[:160]}", flush=True)


if __name__ == "__main__":
    main()
