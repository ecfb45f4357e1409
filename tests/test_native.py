"""Crashes in native code fail one test or one notebook with a clear message, never the whole run.

The crashes here are real: a child process, a pytest run or a Jupyter kernel really dies by SIGSEGV.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from slipcore_nb import runner
from slipcore_nb.export import ExportError
from slipcore_nb.native import NativeCrash, describe_exit, run_in_child

ROOT = Path(__file__).resolve().parent.parent


def _double(x):
    return 2 * x


def _refuse():
    raise ExportError("no merged model at /nowhere: run merge_to_16bit first.")


def _segfault():
    print("llama_model_load: loading tensors", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def _sleep(seconds):
    time.sleep(seconds)


def test_the_child_returns_the_value_or_raises_the_same_exception():
    assert run_in_child(_double, 21, what="doubling") == 42
    with pytest.raises(ExportError, match="run merge_to_16bit first"):
        run_in_child(_refuse, what="refusing")


def test_a_segfault_in_the_child_names_what_it_did_the_signal_and_its_last_output():
    with pytest.raises(NativeCrash) as crash:
        run_in_child(_segfault, what="llama.cpp answering with tiny-Q8_0.gguf")
    message = str(crash.value)
    assert message.startswith("llama.cpp answering with tiny-Q8_0.gguf: the child process was killed by SIGSEGV (signal 11).")
    assert "llama_model_load: loading tensors" in message


def test_a_hanging_child_is_killed_at_its_timeout():
    with pytest.raises(NativeCrash, match=r"sleeping: the child process did not finish within 1 s and was killed"):
        run_in_child(_sleep, 60, what="sleeping", timeout=1)


def test_exit_descriptions():
    assert describe_exit(-6) == "was killed by SIGABRT (signal 6)"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(None) == "did not finish"


def test_a_crash_in_one_test_fails_that_test_and_the_session_goes_on(tmp_path):
    """What `make test` sees when llama.cpp segfaults in a GGUF test: one failure with the reason."""
    (tmp_path / "test_crashing.py").write_text(textwrap.dedent("""
        import os, signal
        from slipcore_nb.native import run_in_child

        def load_gguf():
            os.kill(os.getpid(), signal.SIGSEGV)

        def test_loads_a_gguf():
            run_in_child(load_gguf, what="llama.cpp loading tiny-Q4_K_M.gguf")

        def test_after_it():
            assert True
    """))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert "llama.cpp loading tiny-Q4_K_M.gguf: the child process was killed by SIGSEGV" in done.stdout


def _crashing_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('print("loading")'),
        # The pause lets the kernel's output thread send the line before the process dies.
        nbformat.v4.new_code_cell('import os, signal, time\nprint("about to load the GGUF", flush=True)\n'
                                  'time.sleep(1)\nos.kill(os.getpid(), signal.SIGSEGV)'),
        nbformat.v4.new_code_cell('print("never")'),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "09_crash.ipynb"
    nbformat.write(nb, path)
    return path


def test_nbval_fails_a_dead_kernels_cell_at_once(tmp_path):
    """nbval alone waits --nbval-cell-timeout (2000 s) on a dead kernel; the root conftest stops that."""
    notebook = _crashing_notebook(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           "--nbval-lax", str(notebook)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    report = done.stdout + done.stderr
    assert done.returncode == 1, report
    assert "the notebook's kernel died (was killed by SIGSEGV (signal 11)) while running this cell" in report
    assert "about to load the GGUF" in report
    assert "1 passed" in report  # the cell before the crash


def test_the_runner_names_the_notebook_the_cell_and_its_last_output(tmp_path):
    notebook = _crashing_notebook(tmp_path)
    with pytest.raises(runner.NotebookFailed) as failed:
        runner.run_notebook(notebook, tmp_path / "executed", timeout=300)
    message = str(failed.value)
    assert message.startswith("09_crash.ipynb: the kernel died (was killed by SIGSEGV (signal 11)) in cell 2 of 3 (`import os, signal, time`)")
    assert "about to load the GGUF" in message
    executed = json.loads((tmp_path / "executed" / "09_crash.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "loading\n"  # outputs up to the crash are kept


def test_the_runner_lists_stderr_a_user_would_see_but_not_progress_bars(tmp_path):
    notebook = tmp_path / "08_noise.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import sys\nfrom tqdm import tqdm\nfor _ in tqdm(range(3)): pass"),
        nbformat.v4.new_code_cell("import warnings\nwarnings.warn('something a user cannot act on')"),
    ]), notebook)
    executed, seconds = runner.run_notebook(notebook, tmp_path / "executed", timeout=300)
    lines = runner.stderr_lines(executed)
    assert len(lines) == 2 and all(cell == 2 for cell, _ in lines)  # the warning and its source line
    assert "something a user cannot act on" in lines[0][1]
    assert seconds > 0
