#!/usr/bin/env python3
"""Carry what the CUDA path needs to an offline GPU machine, inside the 64 MiB that travels there.

The use it serves: running the CUDA path (``make gpu-check``) on a GPU machine that cannot reach a
package index and receives only a copy of the checkout, so everything the checks import beyond the
machine's own CUDA PyTorch must travel as pinned, hash-checked files. The image it is written for
(one H100 or H200, sm_90; Python 3.12 at ``/opt/torch/.venv/bin/python3`` with torch 2.11+cu130,
transformers 5.17.0, peft, accelerate, nvcc 13.0, cmake, ninja, scikit-build-core) lacks unsloth,
unsloth_zoo, trl, datasets (+ dill, multiprocess), bitsandbytes, gguf and llama-cpp-python
(+ diskcache); peft is carried at our pin. This script:

* here, with the package index (``make gpu-bundle``)::

      python scripts/gpu_bundle.py --out .gpu

  downloads the pinned wheels for CPython 3.12 manylinux x86_64 (hash-checked), slims the two big
  ones (bitsandbytes: only the CUDA 13.0 and CPU libraries; unsloth: without its ``studio/`` web app),
  trims the llama-cpp-python sdist to what a CUDA build and the GGUF converter need, writes
  ``.gpu/manifest.json`` (file, size, sha256, why) and FAILS if the tracked repo plus ``.gpu`` would
  exceed 64 MiB;

* there, with no network::

      python3 scripts/gpu_bundle.py --install --bundle .gpu --target /tmp/slipcore-site

  installs the wheels with ``pip install --no-index --no-deps --target``, builds llama-cpp-python from
  the trimmed sdist with CUDA for sm_90 only (pointing CMake at pip's cuBLAS when the toolkit lacks
  it), checks the imports in a child process, prints the time of each step and writes
  ``<target>/slipcore-gpu.env`` (``PYTHONPATH``, ``LLAMA_CPP_DIR``, offline variables, and
  ``LD_LIBRARY_PATH`` when cuBLAS came from pip) for the GPU check to source.
  ``--no-flash-attn`` builds without llama.cpp's CUDA flash-attention kernels (about a third less
  nvcc work) if the build does not fit the time. ``make gpu-check`` splits this in two:
  ``--install --no-build`` (seconds), then ``--build-only`` in the background while the GPU training
  checks run; the build ends by writing ``<target>/llama-cpp-build.json``, which gpu_check.py waits
  for (nvcc takes minutes; run beside the checks, it costs little wall time: docs/gpu.md).

Standard library only: it runs under the GPU image's Python 3.12 and a developer's Python 3.10+.
The pure helpers (trimming rules, wheel slimming, size accounting, pip arguments) are unit-tested
offline in ``tests/test_gpu_bundle.py``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from slipcore_nb import whole_files  # noqa: E402 - stdlib only: files written whole, as everywhere here
from slipcore_nb.llama_cpp_build import LLAMA_CPP_VERSION  # noqa: E402 - stdlib only: the one pin

MIB = 1024 * 1024
LIMIT_BYTES = 64 * MIB  # what the device tool carries: tracked + untracked-not-ignored files + carried paths
PYTHON_VERSION = "3.12"  # /opt/torch/.venv/bin/python3 on the GPU image is 3.12.3
# pip matches manylinux_2_N exactly, so name every glibc level a wheel we carry might be tagged with.
PLATFORMS = ("manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")

LLAMA_CPP_SDIST = f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TRIMMED_SDIST = f"llama_cpp_python-{LLAMA_CPP_VERSION}-trimmed.tar.gz"
# H100 and H200 = sm_90. LLAVA (tools/mtmd) is not built, so tools/ is trimmed away; the other OFFs name
# explicitly what llama.cpp already skips when it is not the top-level project.
CUDA_CMAKE_ARGS = ("-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=90", "-DLLAVA_BUILD=OFF",
                   "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
                   "-DLLAMA_BUILD_SERVER=OFF", "-DGGML_CUDA_NCCL=OFF")
DEFAULT_TARGET = "/tmp/slipcore-site"
# The GPU machine has no network: never let a library wait on one (the Makefile exports the same).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "UNSLOTH_AUTO_INSTALL": "0",
               "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
DEFAULT_BUILD_DIR = "/tmp/slipcore-llama"


# ------------------------------------------------------------------------------------ what travels


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel: where it comes from, why the GPU machine needs it, how it is slimmed."""

    name: str
    version: str
    filename: str  # as the index serves it for cp312 manylinux x86_64
    sha256: str  # of that file, checked after every download
    why: str
    slim: str | None = None  # key of SLIM_RULES, or None to carry the file as served

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def carried_name(self) -> str:
        """The file name in the bundle: a slimmed wheel gets build tag ``1slim`` so nobody mistakes it."""
        if not self.slim:
            return self.filename
        dist, version, rest = self.filename.split("-", 2)
        return f"{dist}-{version}-1slim-{rest}"


# What the image lacks (KINDS.md, "Python packages already there") and the code imports unconditionally
# on the way to `from unsloth import FastLanguageModel`, SFTTrainer, GGUF export or `import llama_cpp`,
# plus peft at our tested pin. What unsloth's metadata lists but its code imports lazily, behind
# find_spec or inside try/except (xformers, torchao, diffusers, hf_transfer, tyro, pydantic, msgspec,
# cut_cross_entropy, structlog, json5, nest_asyncio) stays behind; add it here if a check needs it.
# One version of each: two stop pip's whole install.
WHEELS: tuple[Wheel, ...] = (
    Wheel("unsloth", "2026.10.9", "unsloth-2026.10.9-py3-none-any.whl",
          "feb40b99bc4f8c543a36cbd0fe6e1410d6e4ac16bd4d0c731f607adce3d63bb0",
          "FastLanguageModel: 4-bit load, LoRA, fast kernels (requirements.txt pin)", slim="unsloth"),
    Wheel("unsloth_zoo", "2026.10.9", "unsloth_zoo-2026.10.9-py3-none-any.whl",
          "f68e0576b0e9bd2ef85f19bf665132c576b52ee4df923fbb16c81538a3cde676",
          "imported by `import unsloth` (patches, loss, trainer utils)"),
    Wheel("peft", "0.21.2", "peft-0.21.2-py3-none-any.whl",
          "106ab6077ff72c54d21577f9af5970e34bac7582cb14209f7b2b511e322a4eae",
          "the tested LoRA API (requirements.txt pin); the image has a peft of unrecorded version, this shadows it"),
    Wheel("trl", "1.15.0", "trl-1.15.0-py3-none-any.whl",
          "9c9a4b68a184a0b6425293e9b152950f817af686f3758f70191fff4ded1391c7",
          "SFTConfig/SFTTrainer; unsloth imports it at module level"),
    Wheel("datasets", "4.8.5", "datasets-4.8.5-py3-none-any.whl",
          "5079900781719c0e063a8efdd2cd95a31ad0c63209178669cd23cf1b926149ff",
          "training data for SFTTrainer; unsloth_zoo and trl import it at module level"),
    Wheel("dill", "0.4.1", "dill-0.4.1-py3-none-any.whl",
          "1e1ce33e978ae97fcfcff5638477032b801c46c7c65cf717f95fbc2248f79a9d",
          "datasets imports it at module level (datasets needs dill<0.4.2)"),
    Wheel("multiprocess", "0.70.19", "multiprocess-0.70.19-py312-none-any.whl",
          "3a56c0e85dd5025161bac5ce138dcac1e49174c7d8e74596537e729fd5c53c28",
          "datasets imports it at module level (py312-only wheel)"),
    Wheel("bitsandbytes", "0.50.2", "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl",
          "55348a9a4a21bfd99cf8c7b32fe67b4030ae5c2a05738e03c1747f65fa6ec283",
          "4-bit (bnb-4bit) models and unsloth's dequantize kernels; torch there is cu130",
          slim="bitsandbytes"),
    Wheel("gguf", "0.19.0", "gguf-0.19.0-py3-none-any.whl",
          "70bcd10edfe697fb2dad6e40af2234b9d8ece9a41a99761405121ebda1c3c1cd",
          "transformers reads GGUF files through it (gguf_file=, GGUF round trip)"),
    Wheel("diskcache", "5.6.3", "diskcache-5.6.3-py3-none-any.whl",
          "5e31b2d5fbad117cc363ebaf6b689474db18a1f6438bc82358b024abd4c2ca19",
          "llama_cpp imports it at module level (llama_cache.py)"),
)

# Wheel slimming: a rule says, for a path inside the wheel, whether to keep it.
_BNB_KEEP_LIBS = {"bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cpu.so"}


def _keep_bitsandbytes(path: str) -> bool:
    """bitsandbytes ships one native library per CUDA/ROCm/XPU version (43 MB); torch there is cu130.

    It picks ``libbitsandbytes_cuda{torch.version.cuda}`` (exact match first, then the same major),
    falling back to the CPU library; keep those two.
    """
    if path.startswith("bitsandbytes/libbitsandbytes_") and path.endswith(".so"):
        return path in _BNB_KEEP_LIBS
    return True


def _keep_unsloth(path: str) -> bool:
    """unsloth's wheel carries Unsloth Studio (``studio/``: a web app, 26 MB zipped).

    ``import unsloth`` never imports it; only "decision" checkpoints read two files from it by path.
    """
    return not path.startswith("studio/")


SLIM_RULES: dict[str, tuple[Callable[[str], bool], str]] = {
    "bitsandbytes": (_keep_bitsandbytes, "kept only libbitsandbytes_cuda130.so and libbitsandbytes_cpu.so "
                                         "of its 15 native libraries"),
    "unsloth": (_keep_unsloth, "dropped studio/ (Unsloth Studio web app, never imported by `import unsloth`)"),
}


# ------------------------------------------------------------------------------ trimming the sdist

# Paths are relative to the sdist's top folder (llama_cpp_python-<version>/). A KEEP prefix wins over a
# DROP prefix. llama.cpp is added with add_subdirectory(), so it is not the top-level project: its
# tests/, examples/, tools/, app/ are never configured; ggml only enters ggml/src/ggml-<backend>/ when
# GGML_<BACKEND> is on; vendor/llama.cpp/vendor/* is always added (keep it).
_LLAMA = "vendor/llama.cpp/"
SDIST_DROP_PREFIXES: tuple[str, ...] = (
    # llama-cpp-python's own extras, and the git history it ships (.git/ with the submodule's pack: 38 MB)
    ".git/", "examples/", "docs/", "docker/", "tests/", ".github/", "scripts/",
    # llama.cpp: vocab test files (78 MB), docs, CI, sources of binaries the bindings do not build
    _LLAMA + "models/", _LLAMA + "docs/", _LLAMA + "media/", _LLAMA + ".github/", _LLAMA + ".devops/",
    _LLAMA + "benches/", _LLAMA + "tests/", _LLAMA + "examples/", _LLAMA + "pocs/", _LLAMA + "ci/",
    _LLAMA + "skills/", _LLAMA + "app/", _LLAMA + "tools/", _LLAMA + "scripts/",
    _LLAMA + "build-xcframework.sh",
    # ggml backends other than CPU and CUDA (hip/musa reuse ggml-cuda's sources, not the reverse)
    *(f"{_LLAMA}ggml/src/ggml-{b}/" for b in (
        "cann", "et", "hexagon", "hip", "metal", "musa", "opencl", "openvino", "sycl", "virtgpu",
        "vulkan", "webgpu", "zdnn", "zendnn")),
)
SDIST_KEEP_PREFIXES: tuple[str, ...] = (
    _LLAMA + "models/templates/",  # chat templates the converter reads for a few architectures
)
SDIST_DROP_SUFFIXES: tuple[str, ...] = (".gguf", ".gguf.inp", ".gguf.out")
# The submodule's ".git" file points into the dropped .git/modules/ (llama.cpp's build-info then says
# "Git repository not found" and stamps commit "unknown": harmless).
SDIST_DROP_FILES: frozenset[str] = frozenset({_LLAMA + ".git"})

# What a trimmed sdist must still hold (checked after trimming, and by the tests).
SDIST_REQUIRED: tuple[str, ...] = (
    "pyproject.toml", "CMakeLists.txt", "README.md", "llama_cpp/__init__.py", "llama_cpp/llama_cpp.py",
    _LLAMA + "CMakeLists.txt", _LLAMA + "ggml/src/ggml-cuda/CMakeLists.txt", _LLAMA + "ggml/src/ggml-cpu/CMakeLists.txt",
    _LLAMA + "src/CMakeLists.txt", _LLAMA + "common/CMakeLists.txt", _LLAMA + "vendor/CMakeLists.txt",
    _LLAMA + "convert_hf_to_gguf.py", _LLAMA + "convert_lora_to_gguf.py", _LLAMA + "conversion/__init__.py",
    _LLAMA + "gguf-py/gguf/__init__.py",
)


def sdist_keep(rel: str) -> bool:
    """Whether a path of the llama-cpp-python sdist (relative to its top folder) goes into the trimmed one."""
    if rel.startswith(SDIST_KEEP_PREFIXES):
        return True
    if rel in SDIST_DROP_FILES or rel.endswith(SDIST_DROP_SUFFIXES):
        return False
    return not rel.startswith(SDIST_DROP_PREFIXES)


def _split_top(name: str) -> tuple[str, str]:
    top, _, rel = name.partition("/")
    return top, rel


def trim_sdist(src: Path, dst: Path, keep: Callable[[str], bool] = sdist_keep) -> dict:
    """Write a trimmed copy of an sdist; byte-for-byte reproducible. Returns counts and sizes."""
    kept = dropped = kept_bytes = dropped_bytes = 0
    tmp = dst.with_name(dst.name + ".part")
    with tarfile.open(src, "r:gz") as tin, open(tmp, "wb") as raw:
        members = sorted(tin.getmembers(), key=lambda m: m.name)
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tout:
            for m in members:
                top, rel = _split_top(m.name)
                if ".." in Path(m.name).parts or m.name.startswith("/"):
                    raise ValueError(f"{src.name}: unsafe path {m.name!r}")
                if not (m.isfile() or m.isdir() or m.issym()):
                    continue
                if rel and not keep(rel + ("/" if m.isdir() else "")):
                    if m.isfile():
                        dropped += 1
                        dropped_bytes += m.size
                    continue
                info = tarfile.TarInfo(m.name)
                info.type, info.mode, info.mtime, info.linkname = m.type, m.mode, int(m.mtime), m.linkname
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if m.isfile():
                    info.size = m.size
                    tout.addfile(info, tin.extractfile(m))
                    kept += 1
                    kept_bytes += m.size
                else:
                    tout.addfile(info)
    os.replace(tmp, dst)
    return {"kept_files": kept, "kept_bytes": kept_bytes, "dropped_files": dropped, "dropped_bytes": dropped_bytes}


def missing_required(names: Iterable[str], required: Iterable[str] = SDIST_REQUIRED) -> list[str]:
    """Which of ``required`` (relative to the top folder) are absent from archive member ``names``."""
    present = {_split_top(n)[1] for n in names}
    return [r for r in required if r not in present]


# ----------------------------------------------------------------------------- slimming a wheel


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim_wheel(src: Path, dst: Path, keep: Callable[[str], bool]) -> dict:
    """Copy a wheel without the files ``keep`` rejects; RECORD is rewritten to match; reproducible.

    dist-info files are always kept. Entries are written sorted, with a fixed date, RECORD last.
    """
    kept = dropped = dropped_bytes = 0
    with zipfile.ZipFile(src) as zin:
        infos = [i for i in zin.infolist() if not i.is_dir()]
        records = [i for i in infos if i.filename.endswith(".dist-info/RECORD")]
        if len(records) != 1:
            raise ValueError(f"{src.name}: expected one .dist-info/RECORD, found {len(records)}")
        record_name = records[0].filename
        dist_info = record_name.rsplit("/", 1)[0] + "/"
        wanted = []
        for info in infos:
            if info.filename == record_name:
                continue
            if info.filename.startswith(dist_info) or keep(info.filename):
                wanted.append(info)
            else:
                dropped += 1
                dropped_bytes += info.file_size
        wanted.sort(key=lambda i: i.filename)
        rows = []
        tmp = dst.with_name(dst.name + ".part")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for info in wanted:
                data = zin.read(info)
                out = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                out.external_attr = info.external_attr
                out.compress_type = zipfile.ZIP_DEFLATED
                zout.writestr(out, data)
                rows.append([info.filename, _record_hash(data), str(len(data))])
                kept += 1
            rows.append([record_name, "", ""])
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)
            out = zipfile.ZipInfo(record_name, date_time=(1980, 1, 1, 0, 0, 0))
            out.external_attr = 0o644 << 16
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, buf.getvalue())
    os.replace(tmp, dst)
    return {"kept_files": kept, "dropped_files": dropped, "dropped_bytes": dropped_bytes}


# ------------------------------------------------------------------------------- size accounting


class BundleTooBig(RuntimeError):
    """What would travel to the GPU machine exceeds the limit; the message names the biggest files."""


def travelling_files(repo: Path) -> dict[str, int]:
    """Files the device tool sends from ``repo``: tracked plus untracked-not-ignored, path -> bytes."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    sizes = {}
    for rel in out.decode("utf-8", "surrogateescape").split("\0"):
        path = repo / rel
        if rel and path.is_file() and not path.is_symlink():
            sizes[rel] = path.stat().st_size
    return sizes


def bundle_files(bundle: Path, prefix: str) -> dict[str, int]:
    """Every file under ``bundle`` keyed as ``prefix/relative/path``."""
    return {f"{prefix}/{p.relative_to(bundle).as_posix()}": p.stat().st_size
            for p in sorted(bundle.rglob("*")) if p.is_file()}


def check_budget(sizes: Mapping[str, int], limit: int = LIMIT_BYTES, top: int = 5) -> int:
    """Total bytes of ``sizes``; raises :class:`BundleTooBig` naming the biggest files if over ``limit``."""
    total = sum(sizes.values())
    if total > limit:
        biggest = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        listed = ", ".join(f"{name} ({size / MIB:.1f} MiB)" for name, size in biggest)
        raise BundleTooBig(f"what travels to the GPU machine is {total / MIB:.1f} MiB, over the {limit / MIB:.0f} MiB "
                           f"limit by {(total - limit) / MIB:.1f} MiB; biggest: {listed}. Drop or slim one of them.")
    return total


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_entry(path: Path, rel: str, why: str, source: str, slimmed: str | None = None) -> dict:
    """One manifest row: file (relative to the bundle), size, sha256, why, source, what was slimmed."""
    entry = {"file": rel, "size": path.stat().st_size, "sha256": sha256_file(path), "why": why, "source": source}
    if slimmed:
        entry["slimmed"] = slimmed
    return entry


# --------------------------------------------------------------------------------- downloading


def pip_download_args(requirement: str, dest: Path, python: str = sys.executable) -> list[str]:
    """``pip download`` of one wheel for the GPU machine's CPython 3.12 manylinux x86_64, no dependencies."""
    args = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
            "--implementation", "cp"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args + ["-d", str(dest), requirement]


def sdist_download_args(dest: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
            f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d", str(dest)]


def _fetch(cache: Path, filename: str, sha256: str, args_for: Callable[[Path], list[str]]) -> Path:
    """The file from the cache, or downloaded into it; its sha256 must match the pin."""
    cached = cache / filename
    if cached.is_file() and sha256_file(cached) == sha256:
        return cached
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".dl-") as tmp:
        done = subprocess.run(args_for(Path(tmp)), capture_output=True, text=True)
        got = Path(tmp) / filename
        if done.returncode != 0 or not got.is_file():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            found = sorted(p.name for p in Path(tmp).iterdir())
            raise SystemExit(f"gpu_bundle: could not download {filename} (pip exit {done.returncode}, got {found}):\n{tail}")
        digest = sha256_file(got)
        if digest != sha256:
            raise SystemExit(f"gpu_bundle: {filename} has sha256 {digest}, pinned {sha256}: the index serves a "
                             "different file; check it and update the pin in scripts/gpu_bundle.py.")
        os.replace(got, cached)
    return cached


def default_cache() -> Path:
    root = os.environ.get("SLIPCORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "slipcore_nb")
    return Path(root) / "gpu-bundle"


def _same_file(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and sha256_file(a) == sha256_file(b)


def prepare(out: Path, repo: Path, cache: Path, limit: int = LIMIT_BYTES) -> dict:
    """Fill ``out`` with the wheels, the trimmed sdist and manifest.json; fail over ``limit``. Idempotent."""
    started = time.monotonic()
    wheel_dir = out / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for wheel in WHEELS:
        src = _fetch(cache, wheel.filename, wheel.sha256,
                     lambda d, w=wheel: pip_download_args(w.requirement, d))
        dst = wheel_dir / wheel.carried_name
        slimmed = None
        if wheel.slim:
            keep, slimmed = SLIM_RULES[wheel.slim]
            staged = cache / ("slim-" + wheel.carried_name)
            slim_wheel(src, staged, keep)  # redone every time (seconds), so a changed rule always applies
            src = staged
        if not _same_file(src, dst):
            shutil.copyfile(src, dst)
        entries.append(manifest_entry(dst, f"wheels/{dst.name}", wheel.why,
                                      f"PyPI {wheel.requirement} ({wheel.filename}, sha256 {wheel.sha256})", slimmed))
    planned = {e["file"].split("/", 1)[1] for e in entries}
    for stale in sorted(wheel_dir.iterdir()):
        if stale.name not in planned:
            print(f"removing stale {stale}")
            stale.unlink() if stale.is_file() else shutil.rmtree(stale)

    sdist = _fetch(cache, LLAMA_CPP_SDIST, LLAMA_CPP_SDIST_SHA256, sdist_download_args)
    staged = cache / TRIMMED_SDIST
    stats = trim_sdist(sdist, staged)
    print(f"trimmed {LLAMA_CPP_SDIST}: kept {stats['kept_files']} files ({stats['kept_bytes'] / MIB:.1f} MiB "
          f"unpacked), dropped {stats['dropped_files']} ({stats['dropped_bytes'] / MIB:.1f} MiB)")
    with tarfile.open(staged) as t:
        missing = missing_required(t.getnames())
    if missing:
        raise SystemExit(f"gpu_bundle: the trimmed sdist lacks {missing}: fix SDIST_DROP_PREFIXES.")
    dst = out / TRIMMED_SDIST
    if not _same_file(staged, dst):
        shutil.copyfile(staged, dst)
    entries.append(manifest_entry(dst, TRIMMED_SDIST,
                                  "llama-cpp-python built there with CUDA (sm_90); its vendor/llama.cpp holds the GGUF "
                                  "converter (convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/)",
                                  f"PyPI llama-cpp-python=={LLAMA_CPP_VERSION} sdist (sha256 {LLAMA_CPP_SDIST_SHA256})",
                                  "dropped models/*.gguf vocab files, docs, tests, examples, tools, non-CUDA ggml "
                                  "backends (rules: SDIST_DROP_PREFIXES in scripts/gpu_bundle.py)"))

    manifest = {"limit_bytes": limit, "python": f"cp{PYTHON_VERSION.replace('.', '')} manylinux x86_64",
                "cmake_args": list(CUDA_CMAKE_ARGS), "files": entries}
    key = _bundle_key(repo, out)
    manifest["bundle_bytes"] = sum(e["size"] for e in entries)
    manifest["repo_bytes"] = sum(v for k, v in travelling_sizes(repo, out).items() if not k.startswith(key + "/"))
    _write_if_changed(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    sizes = travelling_sizes(repo, out)

    width = max(len(e["file"]) for e in entries)
    for e in entries:
        print(f"{e['file']:<{width}}  {e['size'] / MIB:7.2f} MiB  {e['why']}")
    total = sum(sizes.values())
    print(f"bundle {out}: {manifest['bundle_bytes'] / MIB:.2f} MiB; repo files that travel: "
          f"{manifest['repo_bytes'] / MIB:.2f} MiB; total {total / MIB:.2f} MiB of {limit / MIB:.0f} MiB "
          f"({time.monotonic() - started:.1f} s)")
    check_budget(sizes, limit)
    return manifest


def _bundle_key(repo: Path, out: Path) -> str:
    try:
        return out.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:  # outside the repo: carried as its own path
        return out.resolve().as_posix()


def travelling_sizes(repo: Path, out: Path) -> dict[str, int]:
    """Repo files that travel plus the bundle (counted once even if git does not ignore it)."""
    key = _bundle_key(repo, out)
    sizes = {k: v for k, v in travelling_files(repo).items() if not k.startswith(key + "/")}
    sizes.update(bundle_files(out, key) if out.is_dir() else {})
    return sizes


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        whole_files.write_text(path, text)


# ------------------------------------------------------------------------- on the GPU machine


def pip_install_args(wheels: Iterable[Path], target: str, python: str = sys.executable) -> list[str]:
    """Install carried wheels with no index and no dependency resolution into ``target``."""
    return [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
            "--disable-pip-version-check", "--upgrade", "--target", target, *[str(w) for w in sorted(wheels)]]


def build_args(source_dir: Path, target: str, python: str = sys.executable) -> list[str]:
    """Build and install llama-cpp-python from an unpacked sdist, offline, with the image's build tools
    (scikit-build-core, cmake, ninja are on the image: no build isolation, nothing fetched)."""
    return [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "--no-cache-dir",
            "--disable-pip-version-check", "--upgrade", "--target", target, "-v", str(source_dir)]


def build_env(base: Mapping[str, str], cmake_args: Iterable[str], jobs: int, nvcc: str | None) -> dict[str, str]:
    """Environment for pip's build of llama-cpp-python: CMAKE_ARGS, parallel jobs, the CUDA compiler."""
    env = dict(base)
    env["CMAKE_ARGS"] = " ".join(cmake_args)
    env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(jobs)
    if nvcc:
        env.setdefault("CUDACXX", nvcc)
    return env


def find_nvcc(env: Mapping[str, str] = os.environ) -> str | None:
    """nvcc inside a toolkit folder (``<root>/bin/nvcc``) first: a wrapper on PATH hides where the toolkit is."""
    candidates = [env.get("CUDACXX", "")]
    candidates += [os.path.join(env[k], "bin", "nvcc") for k in ("CUDA_HOME", "CUDA_PATH") if env.get(k)]
    candidates += ["/usr/local/cuda/bin/nvcc", shutil.which("nvcc") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _first(paths: Iterable[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _lib(folder: Path, name: str) -> Path | None:
    """``lib<name>.so`` or the highest ``lib<name>.so.N`` in ``folder``."""
    exact = folder / f"lib{name}.so"
    if exact.is_file():
        return exact
    versioned = sorted(folder.glob(f"lib{name}.so.[0-9]*"), key=lambda p: (len(p.name), p.name))
    return versioned[-1] if versioned else None


DRIVER_DIRS = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
               "/usr/local/cuda/compat", "/usr/lib/wsl/lib")


def cuda_cmake_hints(toolkit: Path | None, site_dirs: Iterable[Path], driver_dirs: Iterable[Path]) -> tuple[list[str], list[str], list[str]]:
    """CMake arguments that let FindCUDAToolkit work with a toolkit made of pip wheels.

    The image's toolkit may hold nvcc and cudart but not cuBLAS (which torch brings as the pip package
    ``nvidia-cublas``, ``nvidia/cu13/{include,lib}``, with only ``libcublas.so.13``, no ``.so`` link), and
    the driver's ``libcuda.so.1`` may sit outside CMake's search path. Point CMake at the files directly.
    Returns (cmake args, folders for LD_LIBRARY_PATH at run time, notes to print).
    """
    args: list[str] = []
    ld: list[str] = []
    notes: list[str] = []
    lib_dirs = [toolkit / d for d in ("lib64", "lib", "targets/x86_64-linux/lib")] if toolkit else []
    inc_dirs = [toolkit / d for d in ("include", "targets/x86_64-linux/include")] if toolkit else []
    pip_roots = [Path(s) / "nvidia" / sub for s in site_dirs for sub in ("cu13", "cublas", "cuda_runtime")]

    def toolkit_has(name: str) -> bool:
        return any((d / f"lib{name}.so").is_file() for d in lib_dirs)

    for name, header in (("cublas", "cublas_v2.h"), ("cublasLt", None), ("cudart", None)):
        if toolkit_has(name) and (header is None or _first(d / header for d in inc_dirs)):
            continue
        found = next(((root, lib) for root in pip_roots if (lib := _lib(root / "lib", name))), None)
        if not found:
            notes.append(f"lib{name} not found in the toolkit nor in pip's nvidia packages: CMake will search")
            continue
        root, lib = found
        args.append(f"-DCUDA_{name}_LIBRARY={lib}")
        if str(lib.parent) not in ld:
            ld.append(str(lib.parent))
        if header and (root / "include" / header).is_file():
            args.append(f"-DCMAKE_CUDA_FLAGS=-I{root / 'include'}")
        notes.append(f"lib{name}: {lib} (pip package)")

    stub = _first(d / "stubs" / "libcuda.so" for d in lib_dirs)
    if not stub:
        driver = next((lib for d in driver_dirs if (lib := _lib(Path(d), "cuda"))), None)
        if driver:
            args.append(f"-DCUDA_cuda_driver_LIBRARY={driver}")
            notes.append(f"libcuda: {driver} (driver)")
        else:
            args.append("-DGGML_CUDA_NO_VMM=ON")
            notes.append("no libcuda found to link: building with GGML_CUDA_NO_VMM=ON (legacy memory pool)")
    return args, ld, notes


CHECK_CODE = r"""
import importlib, json, os, sys, time
want_gpu = sys.argv[1] == "gpu"
t = time.monotonic()
out = {}
import torch
out["torch"] = torch.__version__
out["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
import unsloth  # first: unsloth_zoo refuses to load without it, and it patches trl/transformers/peft
from unsloth import FastLanguageModel
out["unsloth"] = unsloth.__version__
from importlib import metadata
for name in ("unsloth_zoo", "peft", "trl", "datasets", "bitsandbytes", "gguf"):
    importlib.import_module(name)
    out[name] = metadata.version(name)
from trl import SFTConfig, SFTTrainer
import llama_cpp
out["llama_cpp"] = llama_cpp.__version__
out["llama_supports_gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
out["converter"] = os.path.isfile(os.path.join(os.environ.get("LLAMA_CPP_DIR", ""), "convert_hf_to_gguf.py"))
out["import_seconds"] = round(time.monotonic() - t, 1)
print("GPU_BUNDLE_CHECK " + json.dumps(out), flush=True)
ok = out["converter"] and (not want_gpu or (out["llama_supports_gpu_offload"] and out["cuda_device"]))
sys.exit(0 if ok else 3)
"""


def _run_logged(cmd: list[str], env: Mapping[str, str] | None, log: Path, heartbeat: float = 30.0) -> int:
    """Run ``cmd`` with its output in ``log``; print a line every ``heartbeat`` s and the log's tail on failure."""
    started = time.monotonic()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(env) if env else None)
        while True:
            try:
                rc = proc.wait(timeout=heartbeat)
                break
            except subprocess.TimeoutExpired:
                print(f"  ... {time.monotonic() - started:5.0f} s  {_last_line(log)[:150]}", flush=True)
    if rc != 0:
        print(f"--- last lines of {log} ---")
        print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))
    return rc


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 2000))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    except OSError:
        return ""


def _step(timings: dict, name: str, started: float, detail: str = "") -> None:
    timings[name] = time.monotonic() - started
    print(f"[{timings[name]:6.1f} s] {name}{': ' + detail if detail else ''}", flush=True)


BUILD_RECORD = "llama-cpp-build.json"  # in the site folder: how the llama-cpp-python build ended
ENV_FILE = "slipcore-gpu.env"  # in the site folder: what the wheels phase exports, for the build and the check


def read_env_file(target: str) -> dict[str, str]:
    """The ``export K=V`` lines the wheels phase wrote (values carry no spaces: paths and flags)."""
    path = Path(target) / ENV_FILE
    if not path.is_file():
        raise SystemExit(f"gpu_bundle: {path} is missing: run the wheels phase (--install --no-build) first.")
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if line)
    return {key: value for key, value in pairs}


def _cuda_setup(cmake_args: list[str]) -> tuple[str | None, list[str], list[str]]:
    """nvcc, the CMake hints and the run-time library folders for a CUDA build (nothing for a CPU build)."""
    if "-DGGML_CUDA=on" not in cmake_args:
        return None, [], []
    nvcc = find_nvcc()
    toolkit = Path(nvcc).parent.parent if nvcc else None
    hints, ld_paths, notes = cuda_cmake_hints(toolkit, [Path(p) for p in sys.path if p], DRIVER_DIRS)
    print(f"nvcc: {nvcc or 'not found (CMake will search)'}; " + "; ".join(notes), flush=True)
    return nvcc, hints, ld_paths


def install_wheels(bundle: Path, target: str, build_dir: Path, log_dir: Path | None,
                   cmake_args: Iterable[str] = CUDA_CMAKE_ARGS) -> dict:
    """On the GPU machine, phase 1 (seconds): wheels into ``target``, the sdist unpacked (its converter is
    usable at once), ``<target>/slipcore-gpu.env`` written. Everything but ``import llama_cpp`` works after it."""
    timings: dict[str, float] = {}
    manifest = json.loads((bundle / "manifest.json").read_text())
    for e in manifest["files"]:  # the copy that travelled is the one that was checked here
        path = bundle / e["file"]
        if not path.is_file() or path.stat().st_size != e["size"]:
            raise SystemExit(f"gpu_bundle: {path} is missing or has the wrong size: rerun `make gpu-bundle` and carry {bundle}.")
    log_dir = log_dir or build_dir
    for folder in (build_dir, log_dir, Path(target)):
        folder.mkdir(parents=True, exist_ok=True)
    (Path(target) / BUILD_RECORD).unlink(missing_ok=True)

    t = time.monotonic()
    wheels = sorted((bundle / "wheels").glob("*.whl"))
    if _run_logged(pip_install_args(wheels, target), None, log_dir / "pip-wheels.log"):
        raise SystemExit(f"gpu_bundle: pip could not install the wheels: see {log_dir / 'pip-wheels.log'}")
    _step(timings, "install wheels", t, f"{len(wheels)} wheels into {target}")

    t = time.monotonic()
    src_root = build_dir / f"llama_cpp_python-{LLAMA_CPP_VERSION}"
    if src_root.exists():
        shutil.rmtree(src_root)
    with tarfile.open(bundle / TRIMMED_SDIST) as tar:
        for m in tar.getmembers():
            if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                raise SystemExit(f"gpu_bundle: unexpected entry in the sdist: {m.name}")
        tar.extractall(build_dir)
    _step(timings, "unpack sdist", t, str(src_root))

    _, _, ld_paths = _cuda_setup(list(cmake_args))
    exports = {"PYTHONPATH": os.pathsep.join([target, *filter(None, [os.environ.get("PYTHONPATH")])]),
               "LLAMA_CPP_DIR": str(src_root / "vendor" / "llama.cpp"),
               **{k: os.environ.get(k, v) for k, v in OFFLINE_ENV.items()}}
    if ld_paths:  # libggml-cuda needs libcublas.so.13 even before torch has loaded it
        exports["LD_LIBRARY_PATH"] = os.pathsep.join([*ld_paths, *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])
    env_file = Path(target) / ENV_FILE
    whole_files.write_text(env_file, "".join(f"export {k}={v}\n" for k, v in exports.items()))
    print(f"environment for the GPU check (also in {env_file}):")
    print("".join(f"export {k}={v}\n" for k, v in exports.items()), end="", flush=True)
    return {"exports": exports, "timings": timings}


def build_llama(target: str, build_dir: Path, jobs: int, log_dir: Path | None, check: bool,
                cmake_args: Iterable[str] = CUDA_CMAKE_ARGS) -> dict:
    """On the GPU machine, phase 2 (minutes of nvcc): llama-cpp-python built into ``target`` and its import
    checked. Ends by writing ``<target>/llama-cpp-build.json`` (ok, seconds, error), which gpu_check.py
    waits for, so the GPU training checks can run while this compiles."""
    started = time.monotonic()
    record = {"ok": False, "seconds": None, "error": None}
    try:
        timings = _build_and_check(target, build_dir, jobs, log_dir or build_dir, check, list(cmake_args))
        record.update(ok=True, timings=timings)
    except SystemExit as error:
        record["error"] = str(error)
        raise
    finally:
        record["seconds"] = round(time.monotonic() - started, 1)
        whole_files.write_text(Path(target) / BUILD_RECORD, json.dumps(record) + "\n")
    return record


def _build_and_check(target: str, build_dir: Path, jobs: int, log_dir: Path, check: bool,
                     cmake_args: list[str]) -> dict:
    timings: dict[str, float] = {}
    exports = read_env_file(target)
    src_root = build_dir / f"llama_cpp_python-{LLAMA_CPP_VERSION}"
    if not src_root.is_dir():
        raise SystemExit(f"gpu_bundle: {src_root} is missing: run the wheels phase (--install --no-build) first.")
    t = time.monotonic()
    nvcc, hints, _ = _cuda_setup(cmake_args)
    cmake_args = cmake_args + hints
    print(f"building llama-cpp-python {LLAMA_CPP_VERSION} with {jobs} jobs: CMAKE_ARGS={' '.join(cmake_args)}", flush=True)
    env = build_env(os.environ, cmake_args, jobs, nvcc)
    if _run_logged(build_args(src_root, target), env, log_dir / "llama-cpp-build.log"):
        raise SystemExit(f"gpu_bundle: building llama-cpp-python failed: see {log_dir / 'llama-cpp-build.log'}")
    _step(timings, "build llama-cpp-python", t)
    if check:
        t = time.monotonic()
        kind = "gpu" if "-DGGML_CUDA=on" in cmake_args else "cpu"
        # In the build folder: unsloth writes unsloth_compiled_cache/ into the working directory.
        done = subprocess.run([sys.executable, "-c", CHECK_CODE, kind], env={**os.environ, **exports},
                              capture_output=True, text=True, cwd=build_dir)
        print(done.stdout[-4000:])
        if done.returncode:
            print(done.stderr[-4000:])
            raise SystemExit(f"gpu_bundle: the import check failed (exit {done.returncode}, output above).")
        _step(timings, "import check", t)
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), flush=True)
    return timings


def wait_for_build(target: str, timeout: float, poll: float = 5.0) -> dict:
    """The build record once phase 2 has ended (gpu_check.py calls this before it needs llama_cpp)."""
    path = Path(target) / BUILD_RECORD
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"llama-cpp-python's build had not finished after {timeout:.0f} s ({path} absent)")
        time.sleep(poll)
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    from slipcore_nb.arguments import count, positive_number

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", "--bundle", dest="bundle", default=".gpu", type=Path,
                        help="bundle folder (default .gpu, git-ignored and carried to the GPU machine)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository whose travelling files count towards the limit (default: this one)")
    parser.add_argument("--cache", type=Path, default=None, help="download cache (default $SLIPCORE_CACHE/gpu-bundle)")
    parser.add_argument("--limit-mib", type=positive_number, default=LIMIT_BYTES / MIB, help="size limit (default 64)")
    parser.add_argument("--install", action="store_true", help="on the GPU machine: install the wheels and build llama.cpp")
    parser.add_argument("--target", default=DEFAULT_TARGET, help=f"--install: site folder for PYTHONPATH ({DEFAULT_TARGET})")
    parser.add_argument("--build-dir", type=Path, default=Path(DEFAULT_BUILD_DIR), help="--install: where the sdist is unpacked")
    parser.add_argument("--jobs", type=count(), default=os.cpu_count() or 4, help="--install: parallel compile jobs")
    parser.add_argument("--log-dir", type=Path, default=None, help="--install: where build logs go (e.g. $OUT)")
    parser.add_argument("--no-check", action="store_true", help="--install: skip the import check")
    parser.add_argument("--no-build", action="store_true",
                        help="--install: wheels and sdist only; build later with --build-only (make gpu-check builds "
                             "in the background while the GPU training checks run)")
    parser.add_argument("--build-only", action="store_true",
                        help="build llama-cpp-python into --target (after --install --no-build); writes "
                             f"<target>/{BUILD_RECORD}")
    parser.add_argument("--no-flash-attn", action="store_true",
                        help="--install: add -DGGML_CUDA_FA=OFF (faster build, no CUDA flash attention)")
    parser.add_argument("--cmake-args", default=None,
                        help="--install: replace the CUDA CMake arguments (e.g. a CPU build to test the sdist here)")
    args = parser.parse_args(argv)
    if args.install or args.build_only:
        cmake_args = args.cmake_args.split() if args.cmake_args is not None else list(CUDA_CMAKE_ARGS)
        cmake_args += ["-DGGML_CUDA_FA=OFF"] if args.no_flash_attn else []
        if args.install:
            install_wheels(args.bundle, args.target, args.build_dir, args.log_dir, cmake_args)
        if not args.no_build:
            build_llama(args.target, args.build_dir, args.jobs, args.log_dir, not args.no_check, cmake_args)
        return 0
    try:
        prepare(args.bundle, args.repo, args.cache or default_cache(), int(args.limit_mib * MIB))
    except BundleTooBig as error:
        print(f"gpu_bundle: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
