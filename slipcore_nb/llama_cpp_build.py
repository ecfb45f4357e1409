"""llama.cpp from source: its one pinned version, its source fetched from the package index, the
rules for compiling it on this machine.

llama-cpp-python publishes no wheels on PyPI, so its sdist's ``vendor/llama.cpp`` is the source of all
three llama.cpp pieces the project uses: the runtime (llama-cpp-python, compiled by pip: ``make venv``,
or on Colab :mod:`slipcore_nb.colab_packages` from :func:`llama_build`'s rules), the GGUF converter that
:mod:`slipcore_nb.export` runs (:func:`fetch_converter` copies it into ``$SLIPCORE_CACHE``, or
``LLAMA_CPP_DIR`` names a llama.cpp checkout), and ``llama-server`` (:mod:`slipcore_nb.llama_server`
compiles it from :func:`download_sdist`). Separate so those three share one version, one fetch and
one set of build rules without importing each other (the rules used to live in the Colab-only
module). Imports only the standard library at module level: Colab's first cell reads it before the
stack is installed, and the Makefile reads :data:`LLAMA_CPP_VERSION` from it.

    python -m slipcore_nb.llama_cpp_build --fetch-converter
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from .artifacts import cache_root

LLAMA_CPP_VERSION = "0.3.36"  # llama-cpp-python: the one place it is written (the Makefile and gpu_bundle read it)

# Files of vendor/llama.cpp/ the converters need; everything else in the 74 MB sdist is C++.
_CONVERTER_FILES = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE")
_CONVERTER_DIRS = ("conversion/", "gguf-py/gguf/")


class LlamaCppError(RuntimeError):
    """llama.cpp's source or a tool built from it is missing or cannot be fetched; the message says what to do."""


# ---------------------------------------------------------------------------- the source and the converter


def installed_version() -> str:
    """The installed llama-cpp-python's version: which llama.cpp source the converter and builds must match."""
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise LlamaCppError("llama-cpp-python is not installed: run `make venv` or "
                            "`pip install llama-cpp-python` (it compiles llama.cpp, a few minutes).") from None


def _is_converter_dir(folder: Path) -> bool:
    return (folder / "convert_hf_to_gguf.py").is_file() and (folder / "gguf-py" / "gguf").is_dir()


def find_converter() -> Path:
    """The folder holding ``convert_hf_to_gguf.py`` and its ``gguf-py``; raises :class:`LlamaCppError` if absent."""
    if env := os.environ.get("LLAMA_CPP_DIR"):
        if _is_converter_dir(Path(env)):
            return Path(env)
        raise LlamaCppError(f"LLAMA_CPP_DIR={env} holds no convert_hf_to_gguf.py and gguf-py/: "
                            "point it at a llama.cpp checkout or unset it.")
    folder = cache_root() / f"llama.cpp-{installed_version()}"
    if _is_converter_dir(folder):
        return folder
    raise LlamaCppError("llama.cpp converter not found: run "
                        "`python -m slipcore_nb.llama_cpp_build --fetch-converter` "
                        "(part of `make venv`) or set LLAMA_CPP_DIR to a llama.cpp checkout.")


def fetch_converter() -> Path:
    """Put the converter for the installed llama-cpp-python into the cache (idempotent; ~74 MB download)."""
    try:
        return find_converter()
    except LlamaCppError:
        if os.environ.get("LLAMA_CPP_DIR"):
            raise
    target = cache_root() / f"llama.cpp-{installed_version()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sdist-", dir=target.parent) as sdist_dir:
        _extract_converter(download_sdist(Path(sdist_dir)), target)
    return target


def download_sdist(folder: Path) -> Path:
    """The installed llama-cpp-python's sdist (its ``vendor/llama.cpp`` is the runtime's source), from
    the package index into ``folder``; :mod:`slipcore_nb.llama_server` builds llama.cpp's tools from it."""
    version = installed_version()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"llama-cpp-python=={version}", "-d", str(folder)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    sdists = sorted(folder.glob(f"llama_cpp_python-{version}.tar.gz"))
    if done.returncode != 0 or not sdists:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LlamaCppError(f"could not download the llama-cpp-python {version} sdist from the package index "
                            f"({last}): check the network or set LLAMA_CPP_DIR to a llama.cpp checkout.")
    return sdists[0]


def _extract_converter(sdist: Path, target: Path) -> None:
    """Copy only vendor/llama.cpp's converter files out of the sdist, atomically."""
    staging = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=target.parent))
    try:
        extract_vendored(sdist, staging, lambda rel: rel in _CONVERTER_FILES or rel.startswith(_CONVERTER_DIRS))
        if not _is_converter_dir(staging):
            raise LlamaCppError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py: "
                                "set LLAMA_CPP_DIR to a llama.cpp checkout instead.")
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first; its copy is the same
            if not _is_converter_dir(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def extract_vendored(sdist: Path, dest: Path, keep) -> None:
    """The files of the sdist's ``vendor/llama.cpp/`` whose relative path ``keep`` accepts, into ``dest``
    with their permissions; a member whose path would leave ``dest`` is skipped."""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            _, _, rel = member.name.partition("/vendor/llama.cpp/")
            if not (rel and member.isfile() and keep(rel)) or ".." in Path(rel).parts:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            target.chmod(member.mode | 0o600)


# ---------------------------------------------------------------------------- build rules


def gpu_arch(run: Callable = subprocess.run) -> str | None:
    """Compute capability of GPU 0 without importing torch, e.g. "75" on a T4; None without a GPU."""
    if not shutil.which("nvidia-smi"):
        return None
    done = run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True, text=True)
    found = re.match(r"\s*(\d+)\.(\d+)", done.stdout or "") if done.returncode == 0 else None
    return f"{found.group(1)}{found.group(2)}" if found else None


def nvcc() -> tuple[str, str] | None:
    """(path, CUDA release) of the CUDA compiler a llama.cpp CUDA build would use, or None."""
    path = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    if not path:
        return None
    found = re.search(r"release (\d+\.\d+)", subprocess.run([path, "--version"], capture_output=True, text=True).stdout)
    return (path, found.group(1)) if found else None


@dataclass(frozen=True)
class LlamaBuild:
    """How llama-cpp-python (no wheel on PyPI) is compiled once and kept as a wheel in the cache."""

    variant: str  # part of the wheel folder's name: a wheel is reused only where it runs
    cmake_args: str
    cuda: bool

    def wheel_dir(self, cache: Path) -> Path:
        return cache / "wheels" / f"llama-cpp-python-{LLAMA_CPP_VERSION}-{self.variant}"


def llama_build(arch: str | None, cuda_release: str | None) -> LlamaBuild:
    """CUDA for the GPU present only (one arch compiles several times faster than the default list),
    without the flash-attention kernels (a large share of the compile; ``answering.load_llama`` never
    asks for flash attention), else CPU. GGML_NATIVE=OFF keeps the CPU code at AVX2 so the cached
    wheel runs on whichever Colab CPU the next machine has (a -march=native build can die with
    SIGILL on another one)."""
    base = "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
    if arch and cuda_release:
        cuda = f"-DGGML_CUDA=on -DGGML_CUDA_FA=OFF -DCMAKE_CUDA_ARCHITECTURES={arch}"
        return LlamaBuild(f"cuda{cuda_release}-sm{arch}", f"{base} {cuda}", True)
    return LlamaBuild("cpu-avx2", base, False)



def llama_wheel_command(out_dir: Path) -> list[str]:
    """Compile the wheel from the sdist once (``CMAKE_ARGS`` comes through the environment)."""
    return [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
            "-w", str(out_dir), f"llama-cpp-python=={LLAMA_CPP_VERSION}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slipcore_nb.llama_cpp_build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fetch-converter", action="store_true",
                        help="download llama.cpp's GGUF converter (matching the installed llama-cpp-python) into the cache")
    args = parser.parse_args(argv)
    if args.fetch_converter:
        print(f"llama.cpp converter: {fetch_converter()}")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
