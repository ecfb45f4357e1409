"""Google Colab only: the notebooks' first cell, which gets a fresh Colab runtime ready, and their last.

Why this exists: each notebook opened from its Colab badge runs on a new machine. Its first cell,
generated here (:func:`first_cell`, written into every notebook by :func:`write_first_cells`), clones
the project and calls :func:`setup`, which puts the pieces together in order: Drive and the output
paths (:mod:`slipcore_nb.colab_storage`), then what this notebook still lacks
(:mod:`slipcore_nb.colab_packages`), each command run by :mod:`slipcore_nb.colab_runtime`. The last
cell calls :func:`finish`, so the next notebook's machine finds every file on Drive. Ollama for 05
is :mod:`slipcore_nb.colab_ollama`'s. Elsewhere nothing here runs: ``make venv`` has set the machine
up, and nothing we ship installs anything behind the user's back. Tested offline in
``tests/test_colab.py``.

Imports only the standard library at module level: it runs before the stack is installed.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, MutableMapping

from . import colab_packages, colab_runtime, colab_storage, llama_cpp_build, whole_files
from .artifacts import NOTEBOOKS, REPO, check_notebook
from .registry import COLAB_MARKERS, default_model  # torch-free: registry imports only the standard library

REPO_URL = "https://github.com/slipcore/slipcore-notebooks"  # the first cell clones it on Colab, nowhere else
COLAB_CHECKOUT = "/content/slipcore-notebooks"


def chosen_model(env: Mapping[str, str], output_dir: Path, gpu: bool) -> str:
    """The model the notebooks will load: SLIPCORE_MODEL, else 01's model.json, else the registry's default."""
    if env.get("SLIPCORE_MODEL"):
        return env["SLIPCORE_MODEL"]
    try:
        return json.loads((output_dir / "model.json").read_text())["name"]
    except (OSError, ValueError, KeyError):
        return default_model(gpu, env)[0]


# ---------------------------------------------------------------------------- setup


@dataclass
class Setup:
    colab: bool
    notebook: str
    drive: bool = False
    env: dict[str, str] = field(default_factory=dict)
    installed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        if not self.colab:
            return "Not on Colab: nothing installed or changed; this environment is used as it is (see `make venv`)."
        where = colab_storage.DRIVE_ROOT if self.drive else f"{colab_storage.LOCAL_ROOT} (this machine only)"
        did = f"installed {', '.join(self.installed)}" if self.installed else "nothing to install"
        return f"Colab ready for {self.notebook} in {self.seconds:.0f} s: {did}; outputs in {where}."


def setup(notebook: str, *, drive: bool = True, env: MutableMapping[str, str] | None = None) -> Setup:
    """The first cell of every notebook. Off Colab: one line, nothing else. On Colab: mount Drive
    (or explain what its absence means), point outputs and caches there, install what this notebook
    still lacks, put the clone on ``sys.path`` and move into ``notebooks/``. A second run in the same
    runtime finds everything installed and takes a second."""
    env = os.environ if env is None else env
    check_notebook(notebook)
    result = Setup(colab=colab_runtime.in_colab(env), notebook=notebook)
    if not result.colab:
        print(result.line())
        return result
    start = time.monotonic()
    result.drive, why = colab_storage.mount_drive() if drive else (False, "setup(drive=False)")
    result.env = colab_storage.storage_env(result.drive)
    if "huggingface_hub" in sys.modules and env.get("HF_HUB_CACHE") != result.env["HF_HUB_CACHE"]:
        print("huggingface_hub was imported before this cell: restart the runtime for its cache to move to Drive.")
    env.update(result.env)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in paths if p != str(REPO)])  # child processes
    for key in ("SLIPCORE_OUTPUT_DIR", "SLIPCORE_CACHE", "HF_HUB_CACHE", "SLIPCORE_SCRATCH"):
        Path(result.env[key]).mkdir(parents=True, exist_ok=True)
    if not result.drive:
        print(colab_storage.no_drive_message(why))
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    os.chdir(REPO / "notebooks")

    arch = llama_cpp_build.gpu_arch()
    cuda = llama_cpp_build.nvcc() if arch else None
    cache = Path(result.env["SLIPCORE_CACHE"])
    model = chosen_model(env, Path(result.env["SLIPCORE_OUTPUT_DIR"]), gpu=arch is not None)
    installed_version = colab_packages.installed_version
    todo = colab_packages.plan(notebook, pins=colab_packages.read_pins(), installed=installed_version, arch=arch,
                               cuda_release=cuda[1] if cuda else None, model=model, cache=cache, env=env)
    constraints = colab_storage.SCRATCH / "colab-constraints.txt"
    whole_files.write_text(constraints, colab_packages.constraints_text(installed_version))
    pip_install, spec_name, run = colab_packages.pip_install, colab_packages.spec_name, colab_runtime.run
    if todo.with_deps or todo.no_deps:
        print(f"Installing {len(todo.with_deps) + len(todo.no_deps)} packages against Colab's torch "
              f"{installed_version('torch')} (about 1-3 min)...")
        if todo.with_deps:
            run(pip_install(todo.with_deps, constraints=constraints))
        if todo.no_deps:
            run(pip_install(todo.no_deps, no_deps=True, constraints=constraints))
        result.installed += [spec_name(s) for s in todo.with_deps + todo.no_deps]
    if more := colab_packages.missing_requirements([spec_name(s) for s in colab_packages.pinned_no_deps()]):
        run(pip_install(more, constraints=constraints))
        result.installed += [spec_name(s) for s in more]
    if todo.llama:
        colab_packages.install_llama_cpp(todo.llama, cache, constraints, nvcc_path=cuda[0] if cuda else None)
        result.installed.append(f"llama-cpp-python ({todo.llama.variant})")
    if todo.converter:
        run(colab_packages.converter_command(), cwd=REPO)
        result.installed.append("llama.cpp converter")
    importlib.invalidate_caches()  # so this kernel sees the packages just installed, no restart
    result.seconds = time.monotonic() - start
    print(result.line())
    return result


def finish() -> None:
    """Last cell: flush Drive so the next notebook's machine sees every file (Colab uploads lazily)."""
    if not colab_runtime.in_colab() or not (colab_storage.DRIVE_MOUNT / "MyDrive").is_dir():
        print("Nothing to sync (not on Colab, or Drive not mounted).")
        return
    from google.colab import drive

    drive.flush_and_unmount()
    print("Drive synced and unmounted: open the next notebook from its badge.")


# ---------------------------------------------------------------------------- the first cell


def first_cell(notebook: str) -> str:
    """Every notebook's first code cell, written once here (``python -m slipcore_nb.colab --write-cells``).

    On Colab the project is not there yet, so the cell clones it before it can import this module;
    everywhere else it only imports and prints one line.
    """
    markers = " or ".join(f'"{marker}" in os.environ' for marker in COLAB_MARKERS)
    return (
        "# Colab only: get the project, what Colab lacks, and Drive for outputs; elsewhere this prints one line.\n"
        "import os, sys\n"
        f"if {markers}:\n"
        f'    if not os.path.exists("{COLAB_CHECKOUT}"):\n'
        f"        !git clone -q --depth 1 {REPO_URL} {COLAB_CHECKOUT}\n"
        f'    sys.path.insert(0, "{COLAB_CHECKOUT}")\n'
        "from slipcore_nb import colab\n"
        f'colab.setup("{notebook}");  # the ; keeps Jupyter from echoing its result'
    )


def write_first_cells(folder: Path = REPO / "notebooks") -> list[Path]:
    """Put :func:`first_cell` into each notebook's first code cell; returns the notebooks it changed."""
    changed = []
    for name in NOTEBOOKS:
        path = folder / f"{name}.ipynb"
        notebook = json.loads(path.read_text())
        cell = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
        lines = first_cell(name).splitlines(keepends=True)
        if cell["source"] != lines:
            cell["source"] = lines
            whole_files.write_text(path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-cells"]:
        sys.exit("usage: python -m slipcore_nb.colab --write-cells")
    for path in write_first_cells():
        print("rewrote the first cell of", path)
