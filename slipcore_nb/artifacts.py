"""Artifacts on disk between notebooks: where each lives and which notebook writes it.

Every notebook can open in a fresh kernel: it reads what an earlier one wrote under
``SLIPCORE_OUTPUT_DIR`` (default ``outputs/``), and a missing artifact says which notebook to run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# artifact name -> the notebook that writes it
PRODUCERS = {
    "model.json": "01_load",
    "lora": "03_train",
    "train_metrics.json": "03_train",
    "merged": "04_export",
    "gguf": "04_export",
    "export.json": "04_export",
    "serve_metrics.json": "05_ollama_test",
    "agents_metrics.json": "06_agents",
}


# Big artifacts no later notebook needs: where SLIPCORE_SCRATCH is set (Colab sets it, because free
# Google Drive holds 15 GB) they go to that machine-local disk instead of SLIPCORE_OUTPUT_DIR.
SCRATCH_ARTIFACTS = frozenset({"merged"})


class MissingArtifact(FileNotFoundError):
    """An earlier notebook's output is not there; the message says which notebook to run."""


def cache_root() -> Path:
    """Built models and the llama.cpp converter, shared by all runs: ``$SLIPCORE_CACHE`` or ``~/.cache/slipcore_nb``."""
    return Path(os.environ.get("SLIPCORE_CACHE") or Path.home() / ".cache" / "slipcore_nb")


def output_dir() -> Path:
    """``SLIPCORE_OUTPUT_DIR`` or ``outputs/`` at the repository root (created on demand)."""
    path = Path(os.environ.get("SLIPCORE_OUTPUT_DIR") or REPO / "outputs").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_dir() -> Path | None:
    """``SLIPCORE_SCRATCH``: machine-local disk for big intermediates (created on demand), or None."""
    if not os.environ.get("SLIPCORE_SCRATCH"):
        return None
    path = Path(os.environ["SLIPCORE_SCRATCH"]).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def path(name: str) -> Path:
    """Where artifact ``name`` lives (it may not exist yet)."""
    if name not in PRODUCERS:
        raise KeyError(f"unknown artifact {name!r}; known: {sorted(PRODUCERS)}")
    return (name in SCRATCH_ARTIFACTS and scratch_dir() or output_dir()) / name


def require(name: str) -> Path:
    """The artifact's path, or :class:`MissingArtifact` naming the notebook that makes it."""
    found = path(name)
    if not found.exists():
        raise MissingArtifact(f"{found} is missing: run notebooks/{PRODUCERS[name]}.ipynb first.")
    return found


def save_json(name: str, data: dict) -> Path:
    target = path(name)
    target.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return target


def load_json(name: str) -> dict:
    return json.loads(require(name).read_text())
