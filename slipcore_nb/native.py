"""Run llama.cpp work in a child process, so a crash in native code is an error that names the file.

llama.cpp is C++: a fault in one of its CPU code paths (its AMX path segfaulted on an Intel Xeon
here) kills whichever process loaded it. In a notebook that process is the kernel, under pytest the
whole test session. :func:`run_in_child` runs one function in a fresh interpreter, hands back its
return value or re-raises its exception, and turns a death by signal into :class:`NativeCrash`
with the signal and the child's last output lines.

The child is ``python -c`` rather than a multiprocessing ``spawn``: spawn re-runs the parent's main
script, which breaks a user's script without an ``if __name__ == "__main__"`` guard.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

_CHILD = "import sys, slipcore_nb.native as native; native._child_main(sys.argv[1], sys.argv[2])"


class NativeCrash(RuntimeError):
    """The child process died in native code (a signal or a hard exit) instead of returning."""


def describe_exit(exitcode: int | None) -> str:
    """``was killed by SIGSEGV (signal 11)`` / ``exited with status 3``, for an error message."""
    if exitcode is None:
        return "did not finish"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by {name} (signal {-exitcode})"
    return f"exited with status {exitcode}"


def run_in_child(function, *args, what: str, timeout: float | None = None, **kwargs):
    """``function(*args, **kwargs)`` in a child interpreter; its result, its exception, or :class:`NativeCrash`.

    ``function`` must be a module-level function of an importable module (not ``__main__``), and
    its arguments and result picklable.
    ``what`` says what the child was doing ("llama.cpp answering with model-Q8_0.gguf"): it starts
    the error message a user sees if the child dies. ``timeout`` (seconds) kills a child that hangs.
    """
    if getattr(function, "__module__", "__main__") == "__main__":
        raise ValueError(f"run_in_child needs a function the child can import; {function!r} lives in __main__.")
    with tempfile.TemporaryDirectory(prefix="slipcore-child-") as folder:
        call, result, log = (Path(folder) / name for name in ("call.pickle", "result.pickle", "output.txt"))
        # The child gets this interpreter's import path first, so it finds what the parent finds.
        call.write_bytes(pickle.dumps(list(sys.path)) + pickle.dumps((function, args, kwargs)))
        with open(log, "wb") as output:
            child = subprocess.Popen([sys.executable, "-c", _CHILD, str(call), str(result)],
                                     stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
            try:
                exitcode = child.wait(timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                child.kill()
                exitcode, timed_out = child.wait(), True
        if exitcode == 0 and result.is_file():
            status, value = pickle.loads(result.read_bytes())
            if status == "ok":
                return value
            raise value
        tail = _last_lines(log)
    how = f"did not finish within {timeout:g} s and was killed" if timed_out else describe_exit(exitcode)
    raise NativeCrash(f"{what}: the child process {how}." + (f" Its last output:\n{tail}" if tail else ""))


def _child_main(call_path: str, result_path: str) -> None:
    """The child's side: read the call, run it, write ``("ok", value)`` or ``("error", exception)``."""
    with open(call_path, "rb") as call:
        sys.path[:] = pickle.load(call)
        function, args, kwargs = pickle.load(call)
    try:
        outcome = ("ok", function(*args, **kwargs))
    except Exception as error:  # noqa: BLE001 - every error goes back to the parent
        outcome = ("error", error)
    try:
        data = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle goes back as its text
        data = pickle.dumps(("error", RuntimeError("".join(traceback.format_exception(outcome[1])))))
    Path(result_path).write_bytes(data)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: native libraries have crashed in their destructors


def _last_lines(path: Path, count: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-count:])
