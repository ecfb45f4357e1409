"""The first cell and setup() on Colab, offline: what it does off Colab and on a pretend Colab runtime.

Nobody here can open Colab, so these pin down what could go wrong there by construction: a first cell
that drifts from the one generated, a notebook name nobody knows, a setup that changes this machine,
outputs that land where the next notebook's machine cannot find them, a second run that installs again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slipcore_nb import artifacts, colab, colab_packages, colab_runtime, colab_storage, llama_cpp_build, registry

REPO = Path(__file__).resolve().parent.parent
COLAB_ENV = {"COLAB_RELEASE_TAG": "release-colab-20261101-060000-RC00", "COLAB_GPU": "1"}


# ---------------------------------------------------------------------------- outside Colab


def test_outside_colab_setup_does_nothing_and_says_so_in_one_line(capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("setup ran a command outside Colab")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    env = {"PATH": "/usr/bin", "HOME": "/root"}
    before, cwd, path = dict(env), os.getcwd(), list(sys.path)

    result = colab.setup("03_train", env=env)

    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("Not on Colab")
    assert not result.colab and result.installed == []
    assert env == before and os.getcwd() == cwd and sys.path == path


def test_unknown_notebook_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="01_load"):
        colab.setup("06_extra", env={})


def test_the_notebook_names_are_the_numbered_notebook_files():
    assert sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")) == list(artifacts.NOTEBOOKS)


def test_every_notebook_is_valid_nbformat_with_an_id_on_every_cell():
    """Jupyter and Colab fill in a missing cell id themselves and nbformat warns about it on every run."""
    import warnings

    import nbformat

    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            notebook = nbformat.read(path, as_version=4)
            nbformat.validate(notebook)
        ids = [cell.get("id") for cell in notebook.cells]
        assert None not in ids and len(set(ids)) == len(ids), path.name


def test_the_first_cell_is_written_once_and_every_notebook_has_it(tmp_path):
    for name in artifacts.NOTEBOOKS:
        notebook = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
        first = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
        assert "".join(first["source"]) == colab.first_cell(name), f"run python -m slipcore_nb.colab --write-cells ({name})"
    copies = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", copies)
    stale = copies / "03_train.ipynb"
    stale.write_text(stale.read_text().replace("from slipcore_nb import colab", "from slipcore_nb import colab  # old"))
    assert colab.write_first_cells(copies) == [stale]
    assert stale.read_text() == (REPO / "notebooks" / "03_train.ipynb").read_text()


def test_the_model_guess_matches_the_notebooks_defaults(tmp_path):
    assert colab.chosen_model({"COLAB_RELEASE_TAG": "release-colab"}, tmp_path, gpu=True) == registry.DEFAULT_COLAB_MODEL
    assert colab.chosen_model({}, tmp_path, gpu=True) == registry.DEFAULT_GPU_MODEL
    assert colab.chosen_model({}, tmp_path, gpu=False) == registry.DEFAULT_CPU_MODEL
    (tmp_path / "model.json").write_text('{"name": "smollm2-135m"}')  # 01's choice, read in 02-05
    assert colab.chosen_model({}, tmp_path, gpu=True) == "smollm2-135m"
    assert colab.chosen_model({"SLIPCORE_MODEL": "tiny"}, tmp_path, gpu=True) == "tiny"


# ---------------------------------------------------------------------------- on a pretend Colab


def _fake_colab(monkeypatch, tmp_path, mounted: bool):
    """setup() on a pretend Colab: /content under tmp_path, Drive answer given, commands recorded."""
    drive_root, local_root, scratch = tmp_path / "drive/MyDrive/slipcore", tmp_path / "local", tmp_path / "scratch"
    ran = []
    monkeypatch.setattr(colab_storage, "DRIVE_ROOT", drive_root)
    monkeypatch.setattr(colab_storage, "LOCAL_ROOT", local_root)
    monkeypatch.setattr(colab_storage, "SCRATCH", scratch)
    monkeypatch.setattr(colab_storage, "mount_drive",
                        lambda: (mounted, "mounted" if mounted else "MessageError: declined"))
    monkeypatch.setattr(llama_cpp_build, "gpu_arch", lambda: None)
    fresh = {"torch": "2.11.0+cu128", "numpy": "2.0.2"}  # a new Colab machine, as far as we care
    monkeypatch.setattr(colab_packages, "installed_version", fresh.get)
    monkeypatch.setattr(colab_runtime, "run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(colab_packages, "missing_requirements", lambda names: [])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return ran


@pytest.mark.parametrize("mounted", [True, False])
def test_setup_on_colab_sets_paths_installs_once_and_moves_into_notebooks(monkeypatch, tmp_path, capsys, mounted):
    ran = _fake_colab(monkeypatch, tmp_path, mounted)
    env = dict(COLAB_ENV, SLIPCORE_MODEL="tiny")
    result = colab.setup("03_train", env=env)

    root = colab_storage.DRIVE_ROOT if mounted else colab_storage.LOCAL_ROOT
    assert env["SLIPCORE_OUTPUT_DIR"] == str(root / "outputs") and Path(env["HF_HUB_CACHE"]).is_dir()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(REPO)
    assert Path.cwd() == REPO / "notebooks" and str(REPO) in sys.path
    assert ran and all(cmd[:3] == [sys.executable, "-m", "pip"] for cmd in ran)
    out = capsys.readouterr().out
    assert ("new machine" in out) != mounted
    assert out.strip().splitlines()[-1] == result.line() and result.line().startswith("Colab ready for 03_train")


def test_second_setup_in_the_same_runtime_runs_nothing(monkeypatch, tmp_path, capsys):
    ran = _fake_colab(monkeypatch, tmp_path, True)
    env = dict(COLAB_ENV)
    colab.setup("02_prepare", env=env)
    assert ran
    specs = [arg for cmd in ran for i, arg in enumerate(cmd) if i > 3 and not arg.startswith("-")
             and cmd[i - 1] != "-c"]
    installed = {"torch": "2.11.0+cu128", "numpy": "2.0.2"}
    installed.update({colab_packages.spec_name(s): s.partition("==")[2] or "1.0" for s in specs})  # what pip left
    monkeypatch.setattr(colab_packages, "installed_version", lambda name: installed.get(colab_packages.spec_name(name)))
    ran.clear()
    again = colab.setup("02_prepare", env=env)
    assert ran == [] and again.installed == [] and "nothing to install" in again.line()


@pytest.mark.parametrize("notebook", artifacts.NOTEBOOKS)
def test_each_notebooks_first_cell_only_clones_and_calls_setup(notebook):
    """What a Colab user runs first: no pip line of its own, no lock file, no editable install."""
    import json

    cells = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    first = "".join(next(cell for cell in cells if cell["cell_type"] == "code")["source"])
    assert f'colab.setup("{notebook}")' in first
    assert "git clone -q --depth 1 https://github.com/slipcore/slipcore-notebooks" in first
    for forbidden in ("pip", "requirements", " -e ", "ipykernel", "jupyter", "pytest", "nbval", "torch"):
        assert forbidden not in first, forbidden
