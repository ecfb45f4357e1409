"""Ollama on Colab, offline: the documented install, a server wait that cannot hang, a refusal elsewhere."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from slipcore_nb import colab_ollama
from slipcore_nb.llama_server import free_port


def test_start_ollama_refuses_outside_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("COLAB_GPU", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("started a process"))
    with pytest.raises(RuntimeError, match="only runs on Colab"):
        colab_ollama.start_ollama()


def test_ollama_wait_times_out_with_a_clear_error_on_afree_port():
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    expected = r"did not answer at http://127\.0\.0\.1:\d+ within 1 s; its log: /x\.log"
    with pytest.raises(colab_ollama.OllamaNotReady, match=expected):
        colab_ollama.wait_for_ollama(url, timeout=1.0, interval=0.1, log=Path("/x.log"))
    assert time.monotonic() - start < 10


def test_ollama_wait_stops_at_once_when_the_server_process_exits():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    start = time.monotonic()
    with pytest.raises(colab_ollama.OllamaNotReady, match="exited with code 3"):
        colab_ollama.wait_for_ollama(f"http://127.0.0.1:{free_port()}", timeout=30.0, process=process)
    assert time.monotonic() - start < 5


def test_ollama_is_installed_as_documented_and_served_without_a_shell():
    script = Path("/content/slipcore-scratch/ollama-install.sh")
    cmds = colab_ollama.ollama_install_commands(["zstd", "pciutils"], script)
    assert cmds[-2] == ["curl", "-fsSL", "-o", str(script), "https://ollama.com/install.sh"]
    assert cmds[-1] == ["sh", str(script)]
    assert ["apt-get", "-qq", "install", "-y", "zstd", "pciutils"] in cmds
    assert all(cmd[0] != "apt-get" for cmd in colab_ollama.ollama_install_commands([], script))
    assert colab_ollama.ollama_serve_command() == ["ollama", "serve"]
    only_zstd = lambda tool: "/usr/bin/" + tool if tool == "zstd" else None  # noqa: E731
    assert colab_ollama.ollama_missing_packages(only_zstd) == ["pciutils"]
