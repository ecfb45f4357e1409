"""Google Colab only: is this a Colab runtime, and run one setup command on it.

Why this exists: the package install (:mod:`slipcore_nb.colab_packages`), Ollama's install
(:mod:`slipcore_nb.colab_ollama`) and the first cell's setup (:mod:`slipcore_nb.colab`) all ask the
same two things, so both live below the three of them and each imports them without a cycle.

Imports only the standard library at module level: it runs before the stack is installed.
"""

from __future__ import annotations

import os
import subprocess
from typing import Mapping

from .registry import COLAB_MARKERS  # torch-free: registry imports only the standard library


def in_colab(env: Mapping[str, str] | None = None) -> bool:
    """Colab sets these in every runtime; no other machine we support does."""
    env = os.environ if env is None else env
    return any(key in env for key in COLAB_MARKERS)


def run(cmd: list[str], **kwargs) -> None:
    """Run a command; on failure raise with its last output lines (pip's own error is at the end)."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"`{' '.join(map(str, cmd))}` failed (exit {done.returncode}); rerun the cell, and if it "
                           f"fails the same way, report these lines (Colab's image may have moved):\n{tail}")
