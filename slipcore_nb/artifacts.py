"""Artifacts on disk between notebooks: where each lives and which notebook writes it.

Every notebook can open in a fresh kernel: it reads what an earlier one wrote under
``SLIPCORE_OUTPUT_DIR`` (default ``outputs/``), and a missing artifact says which notebook to run.
The notebooks themselves are named and found here too (:data:`NOTEBOOKS`, :func:`notebooks`), below
everything that names them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import whole_files

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("01_load", "02_prepare", "03_train", "04_export", "05_ollama_test", "06_agents")  # in order
NOTEBOOKS_DIR = REPO / "notebooks"

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


# The keys a later notebook reads from each JSON artifact (and their type): a file without them is refused
# when it is written and when it is read, naming the file, the key and the notebook that writes it.
REQUIRED_KEYS = {
    "model.json": {"name": str},
    "export.json": {"model": str, "merged": str},
    "train_metrics.json": {"eval_split": str, "eval_examples": int},
}


# Big artifacts no later notebook needs: where SLIPCORE_SCRATCH is set (Colab sets it, because free
# Google Drive holds 15 GB) they go to that machine-local disk instead of SLIPCORE_OUTPUT_DIR.
SCRATCH_ARTIFACTS = frozenset({"merged"})


def notebooks() -> list[Path]:
    """The numbered notebooks' files in ``notebooks/``, in order (what the runner runs)."""
    return [NOTEBOOKS_DIR / f"{name}.ipynb" for name in NOTEBOOKS]


def check_notebook(notebook: str) -> str:
    """``notebook`` when it is one of :data:`NOTEBOOKS`, else a ValueError listing them."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}: expected one of {', '.join(NOTEBOOKS)}")
    return notebook


class MissingArtifact(FileNotFoundError):
    """An earlier notebook's output is not there; the message says which notebook to run."""


def cache_root() -> Path:
    """Built models and the llama.cpp converter, shared by all runs: ``$SLIPCORE_CACHE`` (``~`` expanded;
    a file there is an error naming the variable) or ``~/.cache/slipcore_nb``, created on demand."""
    return _folder_from("SLIPCORE_CACHE", Path.home() / ".cache" / "slipcore_nb")


def _folder_from(variable: str, default: Path | None) -> Path | None:
    """The folder a variable names (``~`` expanded), created on demand; an error names the variable."""
    raw = os.environ.get(variable)
    if not raw:
        if default is None:
            return None
        path = default
    else:
        path = Path(raw).expanduser()
    path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"{variable}={raw!r}: {path} is a file, not a folder; point {variable} at a folder"
                                 ) from None
    except PermissionError:
        raise PermissionError(f"{variable}={raw!r}: cannot create {path} (permission denied)") from None
    return path


def output_dir() -> Path:
    """``SLIPCORE_OUTPUT_DIR`` or ``outputs/`` at the repository root (created on demand)."""
    return _folder_from("SLIPCORE_OUTPUT_DIR", REPO / "outputs")


def scratch_dir() -> Path | None:
    """``SLIPCORE_SCRATCH``: machine-local disk for big intermediates (created on demand), or None."""
    return _folder_from("SLIPCORE_SCRATCH", None)


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
    """Artifact ``name`` as JSON, written whole or not at all (a value JSON cannot hold fails first)."""
    target = path(name)
    _check_keys(name, data, f"save_json({name!r})")
    return whole_files.write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


def _check_keys(name: str, data, where: str) -> None:
    """``data`` is a JSON object holding the keys :data:`REQUIRED_KEYS` names for artifact ``name``."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: an artifact is a JSON object (a dict), got {type(data).__name__}")
    for key, kind in REQUIRED_KEYS.get(name, {}).items():
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is str and not value.strip()):
            raise ValueError(f"{where}: key {key!r} must be a non-empty {kind.__name__}, got {value!r} "
                             f"(notebooks after {PRODUCERS[name]} read it)")


def load_json(name: str) -> dict:
    """Artifact ``name``; a damaged file names its path and the notebook that rewrites it."""
    found = require(name)
    again = f"run notebooks/{PRODUCERS[name]}.ipynb again to rewrite it"
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{found} is not valid JSON ({err}): {again}") from None
    except IsADirectoryError:
        raise ValueError(f"{found} is a folder, not a JSON file: {again}") from None
    _check_keys(name, data, f"{found}")
    return data
