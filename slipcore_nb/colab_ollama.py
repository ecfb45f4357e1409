"""Google Colab only: install Ollama on a Colab runtime, start ``ollama serve`` and wait until it answers.

Why this exists: notebook 05 compares the exported model in a real Ollama server, and a Colab runtime
has none. Installing it (Ollama's documented Linux script and the apt packages that script needs),
starting the server in the background and waiting for it with a clear error is this module's one job,
apart from the notebooks' pip installs (:mod:`slipcore_nb.colab_packages`). Elsewhere it refuses:
install Ollama yourself and run ``ollama serve``. The commands and the wait are tested offline in
``tests/test_colab_ollama.py``.

Imports only the standard library at module level: it runs before the stack is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

from . import colab_runtime, colab_storage

OLLAMA_URL = "http://127.0.0.1:11434"
OLLAMA_INSTALL_SCRIPT = "https://ollama.com/install.sh"
OLLAMA_LOG = Path("/content/ollama.log")


class OllamaNotReady(RuntimeError):
    """``ollama serve`` did not answer in time or exited; the message says where its log is."""


def ollama_install_commands(missing_packages: list[str], script: Path) -> list[list[str]]:
    """Ollama's documented Linux install (install.sh), downloaded to a file first so a failed
    download cannot run as an empty script. The script extracts a .tar.zst (needs zstd, which Colab
    lacks) and looks for the GPU with lspci (pciutils; without it, it warns and skips that check)."""
    cmds = []
    if missing_packages:
        cmds += [["apt-get", "-qq", "update"], ["apt-get", "-qq", "install", "-y", *missing_packages]]
    return cmds + [["curl", "-fsSL", "-o", str(script), OLLAMA_INSTALL_SCRIPT], ["sh", str(script)]]


def ollama_missing_packages(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    return [package for tool, package in (("zstd", "zstd"), ("lspci", "pciutils")) if not which(tool)]


def ollama_serve_command() -> list[str]:
    return ["ollama", "serve"]


def ollama_version(url: str = OLLAMA_URL, timeout: float = 2.0) -> str | None:
    """The server's version when one answers at ``url``, else None."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/version", timeout=timeout) as reply:
            return json.loads(reply.read().decode()).get("version", "unknown")
    except (OSError, ValueError):  # URLError, connection refused, timeouts, not JSON
        return None


def wait_for_ollama(url: str = OLLAMA_URL, timeout: float = 60.0, *, interval: float = 0.5,
                    process: subprocess.Popen | None = None, log: Path | None = None) -> str:
    """Poll until the server answers (returns its version); raise :class:`OllamaNotReady` on timeout or exit."""
    where = f"; its log: {log}" if log else ""
    deadline = time.monotonic() + timeout
    while True:
        version = ollama_version(url, timeout=min(2.0, timeout))
        if version:
            return version
        if process is not None and process.poll() is not None:
            raise OllamaNotReady(f"`ollama serve` exited with code {process.returncode} before answering at "
                                 f"{url}{where}. Rerun the cell; 05 falls back to llama.cpp without it.")
        if time.monotonic() >= deadline:
            raise OllamaNotReady(f"Ollama did not answer at {url} within {timeout:g} s{where}. "
                                 "Rerun the cell; 05 falls back to llama.cpp without it.")
        time.sleep(interval)


def start_ollama(url: str = OLLAMA_URL, timeout: float = 60.0) -> subprocess.Popen | None:
    """Colab only: install Ollama if missing, start ``ollama serve`` in the background, wait for it.
    Refuses elsewhere: on your machine install Ollama yourself and run ``ollama serve``."""
    if not colab_runtime.in_colab():
        raise RuntimeError("start_ollama() only runs on Colab. Elsewhere install Ollama "
                           "(https://ollama.com/download) and run `ollama serve`; 05 uses it when it answers.")
    if version := ollama_version(url):
        print(f"Ollama {version} already answers at {url}.")
        return None
    if not shutil.which("ollama"):
        colab_storage.SCRATCH.mkdir(parents=True, exist_ok=True)
        missing = ollama_missing_packages()
        apt = f" and apt packages {' '.join(missing)}" if missing else ""
        print(f"Installing Ollama with its Linux install script{apt} (about 1-3 min)...")
        for cmd in ollama_install_commands(missing, colab_storage.SCRATCH / "ollama-install.sh"):
            colab_runtime.run(cmd)
        if version := ollama_version(url):  # where systemd runs, the script has started the service
            print(f"Ollama {version} installed and answering at {url}.")
            return None
    host = url.split("://", 1)[-1]
    with open(OLLAMA_LOG, "ab") as log:  # the child keeps its own copy of the file descriptor
        process = subprocess.Popen(ollama_serve_command(), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, "OLLAMA_HOST": host})
    version = wait_for_ollama(url, timeout, process=process, log=OLLAMA_LOG)
    print(f"Ollama {version} serving at {url} (pid {process.pid}, log {OLLAMA_LOG}).")
    return process
