"""pytest settings for the whole run: tests/ and the notebooks that nbval executes.

Hypothesis runs derandomized and without time limits: a busy machine must not fail a test (its
"too slow" health check and 200 ms deadline did), and a failure must replay the same way anywhere.

nbval (0.11.0) waits for a cell's reply for up to ``--nbval-cell-timeout`` seconds (2000 by default)
without asking whether the kernel still lives, so a kernel killed by native code held a test run
for many minutes. Here every wait is cut into one-second slices with a liveness check in between:
a dead kernel fails its cell at once, with the kernel's exit status and the cell's last output.
"""

from __future__ import annotations

import queue
import time

from hypothesis import HealthCheck, settings

from slipcore_nb.native import describe_exit

settings.register_profile("slipcore", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("slipcore")


class KernelDied(RuntimeError):
    """The notebook's kernel process ended while nbval waited for a cell."""


def _drain_stream_text(kernel) -> str:
    """What the dying cell printed and nbval has not read yet."""
    texts = []
    while True:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            break
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
    return "".join(texts).strip()


def _exit_status(kernel) -> str:
    process = getattr(getattr(kernel.km, "provisioner", None), "process", None)
    return describe_exit(process.poll() if process is not None else None)


def _watch_nbval_kernels() -> None:
    try:
        from nbval.kernel import RunningKernel
    except ImportError:
        return
    wait = RunningKernel.get_message
    if getattr(wait, "checks_liveness", False):
        return

    def get_message(self, stream, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            try:
                return wait(self, stream, timeout=left)
            except queue.Empty:
                if not self.is_alive():
                    printed = _drain_stream_text(self)
                    raise KernelDied(f"the notebook's kernel died ({_exit_status(self)}) while running this cell"
                                     + (f"; its last output:\n{printed[-2000:]}" if printed else "")) from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    get_message.checks_liveness = True
    RunningKernel.get_message = get_message


_watch_nbval_kernels()
