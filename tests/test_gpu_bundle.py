"""Offline tests of scripts/gpu_bundle.py: sdist trimming, wheel slimming, size accounting, manifest, pip args.

Nothing here touches the network or needs a GPU: archives are built in tmp_path.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_bundle.py"
spec = importlib.util.spec_from_file_location("gpu_bundle", SCRIPT)
gb = importlib.util.module_from_spec(spec)
sys.modules["gpu_bundle"] = gb
spec.loader.exec_module(gb)

TOP = f"llama_cpp_python-{gb.LLAMA_CPP_VERSION}"
L = "vendor/llama.cpp/"
KEPT = [
    "CMakeLists.txt", "pyproject.toml", "README.md", "PKG-INFO", "LICENSE.md",
    "llama_cpp/__init__.py", "llama_cpp/llama_cpp.py", "llama_cpp/llama.py",
    L + "CMakeLists.txt", L + "include/llama.h", L + "src/CMakeLists.txt", L + "src/llama.cpp",
    L + "src/models/llama.cpp",  # model graphs: "models/" under src/ is source, not vocab files
    L + "common/CMakeLists.txt", L + "vendor/CMakeLists.txt", L + "vendor/miniaudio/miniaudio.h",
    L + "ggml/CMakeLists.txt", L + "ggml/src/ggml.c", L + "ggml/src/ggml-cpu/CMakeLists.txt",
    L + "ggml/src/ggml-cuda/CMakeLists.txt", L + "ggml/src/ggml-cuda/ggml-cuda.cu",
    L + "ggml/src/ggml-cuda/template-instances/mmq-instance-q4_k.cu",
    L + "convert_hf_to_gguf.py", L + "convert_lora_to_gguf.py", L + "conversion/__init__.py",
    L + "conversion/base.py", L + "gguf-py/gguf/__init__.py", L + "gguf-py/gguf/gguf_writer.py",
    L + "models/templates/llama-cpp-rwkv-world.jinja",  # the converter reads these for a few architectures
]
DROPPED = [
    L + "models/ggml-vocab-llama-bpe.gguf", L + "models/ggml-vocab-gemma-4.gguf",
    L + "models/ggml-vocab-qwen2.gguf.inp", L + "models/ggml-vocab-qwen2.gguf.out",
    L + "ggml/src/ggml-vulkan/ggml-vulkan.cpp", L + "ggml/src/ggml-sycl/CMakeLists.txt",
    L + "ggml/src/ggml-metal/ggml-metal.m", L + "ggml/src/ggml-opencl/ggml-opencl.cpp",
    L + "ggml/src/ggml-hip/CMakeLists.txt", L + "ggml/src/ggml-hexagon/CMakeLists.txt",
    L + "docs/build.md", L + "tests/test-backend-ops.cpp", L + "examples/simple/simple.cpp",
    L + "tools/server/server.cpp", L + "tools/mtmd/CMakeLists.txt", L + "media/llama1-logo.png",
    L + ".github/workflows/build.yml", ".git/modules/vendor/llama.cpp/objects/pack/pack-1.pack", L + ".git",
    "docs/index.md", "examples/high_level_api/fastapi_server.py", "tests/test_llama.py", "docker/Dockerfile",
]


@pytest.mark.parametrize("rel", KEPT)
def test_trimming_keeps_what_the_cuda_build_and_converter_need(rel):
    assert gb.sdist_keep(rel), rel


@pytest.mark.parametrize("rel", DROPPED)
def test_trimming_drops_vocab_files_docs_tests_and_other_backends(rel):
    assert not gb.sdist_keep(rel), rel


def test_required_list_survives_the_rules():
    assert [r for r in gb.SDIST_REQUIRED if not gb.sdist_keep(r)] == []


def _make_sdist(path: Path, names: list[str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = f"content of {name}\n".encode()
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))


def test_trim_sdist_writes_only_kept_files_and_is_reproducible(tmp_path):
    src = tmp_path / "src.tar.gz"
    _make_sdist(src, KEPT + DROPPED)
    first, second = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    stats = gb.trim_sdist(src, first)
    gb.trim_sdist(src, second)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames()}
        content = tar.extractfile(f"{TOP}/{L}convert_hf_to_gguf.py").read()
    assert names == set(KEPT)
    assert content == f"content of {L}convert_hf_to_gguf.py\n".encode()
    assert stats["kept_files"] == len(KEPT) and stats["dropped_files"] == len(DROPPED)
    assert gb.missing_required([f"{TOP}/{n}" for n in names]) == []


def test_trim_sdist_refuses_unsafe_paths(tmp_path):
    src = tmp_path / "evil.tar.gz"
    with tarfile.open(src, "w:gz") as tar:
        info = tarfile.TarInfo(f"{TOP}/../../etc/passwd")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match="unsafe"):
        gb.trim_sdist(src, tmp_path / "out.tar.gz")


def test_missing_required_names_what_a_bad_rule_removed():
    names = [f"{TOP}/{r}" for r in gb.SDIST_REQUIRED if "ggml-cuda" not in r]
    assert gb.missing_required(names) == [L + "ggml/src/ggml-cuda/CMakeLists.txt"]


# ------------------------------------------------------------------------------------ wheels


def _make_wheel(path: Path, files: dict[str, bytes]) -> None:
    dist_info = "bitsandbytes-0.50.2.dist-info"
    files = {**files, f"{dist_info}/METADATA": b"Name: bitsandbytes\nVersion: 0.50.2\n",
             f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\n"}
    record = "".join(f"{name},{gb._record_hash(data)},{len(data)}\n" for name, data in files.items())
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist_info}/RECORD", record + f"{dist_info}/RECORD,,\n")


def test_slim_bitsandbytes_keeps_cuda130_and_cpu_libraries_only(tmp_path):
    libs = {f"bitsandbytes/libbitsandbytes_{v}.so": v.encode() * 100
            for v in ("cuda118", "cuda126", "cuda128", "cuda130", "cuda132", "rocm72", "xpu2026", "cpu")}
    src, dst = tmp_path / "bnb.whl", tmp_path / "bnb-slim.whl"
    _make_wheel(src, {"bitsandbytes/__init__.py": b"x = 1\n", "bitsandbytes/cextension.py": b"", **libs})
    stats = gb.slim_wheel(src, dst, gb.SLIM_RULES["bitsandbytes"][0])
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
        init = z.read("bitsandbytes/__init__.py")
    so = sorted(n for n in names if n.endswith(".so"))
    assert so == ["bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so"]
    assert "bitsandbytes/__init__.py" in names and init == b"x = 1\n"
    assert "cuda128" not in record and "libbitsandbytes_cuda130.so,sha256=" in record
    assert record.rstrip().endswith("bitsandbytes-0.50.2.dist-info/RECORD,,")
    assert stats["dropped_files"] == 6
    again = tmp_path / "again.whl"
    gb.slim_wheel(src, again, gb.SLIM_RULES["bitsandbytes"][0])
    assert again.read_bytes() == dst.read_bytes()


def test_slim_unsloth_drops_studio_only():
    keep = gb.SLIM_RULES["unsloth"][0]
    assert keep("unsloth/__init__.py") and keep("unsloth/models/loader.py") and keep("unsloth_cli/__init__.py")
    assert not keep("studio/frontend/dist/assets/chat.js") and not keep("studio/backend/routes/inference.py")


def test_slimmed_wheels_get_a_build_tag_and_others_keep_their_name():
    by_name = {w.name: w for w in gb.WHEELS}
    assert by_name["bitsandbytes"].carried_name == "bitsandbytes-0.50.2-1slim-py3-none-manylinux_2_24_x86_64.whl"
    assert by_name["trl"].carried_name == by_name["trl"].filename
    assert len(by_name) == len(gb.WHEELS), "one version of each package, or pip stops"
    for w in gb.WHEELS:
        assert w.filename.startswith(w.name.replace("-", "_") + "-" + w.version + "-"), w
        assert len(w.sha256) == 64 and w.why
        assert w.slim is None or w.slim in gb.SLIM_RULES


def test_required_packages_are_carried_and_image_packages_are_not():
    names = {w.name for w in gb.WHEELS}
    assert {"unsloth", "unsloth_zoo", "trl", "datasets", "bitsandbytes", "dill", "multiprocess", "diskcache"} <= names
    assert not names & {"torch", "transformers", "accelerate", "numpy", "xformers", "torchvision", "triton"}


# ------------------------------------------------------------------------------ size accounting


def test_budget_accepts_a_bundle_under_the_limit():
    assert gb.check_budget({"a": 10, "b": 20}, limit=30) == 30


def test_budget_refuses_over_the_limit_and_names_the_biggest_files():
    sizes = {"README.md": 2_000, f".gpu/{gb.TRIMMED_SDIST}": 50 * gb.MIB,
             ".gpu/wheels/bitsandbytes-0.50.2.whl": 41 * gb.MIB, "data/train.jsonl": 900_000}
    with pytest.raises(gb.BundleTooBig) as error:
        gb.check_budget(sizes, top=2)
    message = str(error.value)
    assert "over the 64 MiB limit" in message and "91.9 MiB" in message and "by 27.9 MiB" in message
    assert message.index("llama_cpp_python") < message.index("bitsandbytes")
    assert "README.md" not in message


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_travelling_files_are_tracked_plus_untracked_not_ignored(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / ".gitignore").write_text(".venv/\n.gpu/\n")
    (repo / "tracked.py").write_text("x" * 100)
    _git(repo, "add", ".gitignore", "tracked.py")
    (repo / "untracked.txt").write_text("y" * 7)
    (repo / ".venv").mkdir()
    (repo / ".venv" / "big.bin").write_bytes(b"z" * 5000)
    bundle = repo / ".gpu"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "wheels" / "a.whl").write_bytes(b"w" * 300)
    assert gb.travelling_files(repo) == {".gitignore": 13, "tracked.py": 100, "untracked.txt": 7}
    sizes = gb.travelling_sizes(repo, bundle)
    assert sizes == {".gitignore": 13, "tracked.py": 100, "untracked.txt": 7, ".gpu/wheels/a.whl": 300}
    (repo / ".gitignore").write_text(".venv/\n")  # a bundle git does not ignore is still counted once
    assert gb.travelling_sizes(repo, bundle)[".gpu/wheels/a.whl"] == 300
    assert sum(gb.travelling_sizes(repo, bundle).values()) == len(".venv/\n") + 100 + 7 + 300


def test_manifest_entry_fields(tmp_path):
    f = tmp_path / "x.whl"
    f.write_bytes(b"abc")
    entry = gb.manifest_entry(f, "wheels/x.whl", "needed because", "PyPI x==1", slimmed="dropped y")
    assert entry == {"file": "wheels/x.whl", "size": 3,
                     "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                     "why": "needed because", "source": "PyPI x==1", "slimmed": "dropped y"}
    assert "slimmed" not in gb.manifest_entry(f, "wheels/x.whl", "w", "s")
    json.dumps(entry)


# ------------------------------------------------------------------------------ pip and cmake


def test_pip_download_targets_cpython_312_manylinux_x86_64_without_deps():
    args = gb.pip_download_args("trl==1.15.0", Path("/d"), python="py")
    assert args[:4] == ["py", "-m", "pip", "download"]
    assert "--no-deps" in args and "--only-binary=:all:" in args
    assert args[args.index("--python-version") + 1] == "3.12" and args[args.index("--implementation") + 1] == "cp"
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert "manylinux_2_24_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert all(p.endswith("x86_64") for p in platforms)
    assert args[-1] == "trl==1.15.0"


def test_install_is_offline_and_builds_cuda_for_sm90_only(tmp_path):
    install = gb.pip_install_args([Path("b.whl"), Path("a.whl")], "/tmp/site", python="py")
    assert {"--no-index", "--no-deps"} <= set(install) and install[install.index("--target") + 1] == "/tmp/site"
    assert install[-2:] == ["a.whl", "b.whl"]
    build = gb.build_args(Path("/src"), "/tmp/site", python="py")
    assert {"--no-index", "--no-deps", "--no-build-isolation"} <= set(build)
    env = gb.build_env({"PATH": "/bin"}, gb.CUDA_CMAKE_ARGS, 16, "/usr/local/cuda/bin/nvcc")
    cmake = env["CMAKE_ARGS"].split()
    assert {"-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=90", "-DLLAVA_BUILD=OFF"} <= set(cmake)
    assert env["CMAKE_BUILD_PARALLEL_LEVEL"] == "16" and env["CUDACXX"] == "/usr/local/cuda/bin/nvcc"
    assert env["PATH"] == "/bin"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_cuda_hints_point_cmake_at_pip_cublas_and_the_driver(tmp_path):
    toolkit = tmp_path / "cuda"
    _touch(toolkit / "bin" / "nvcc")
    _touch(toolkit / "lib64" / "libcudart.so")
    _touch(toolkit / "include" / "cuda_runtime.h")
    site = tmp_path / "site"
    cublas = _touch(site / "nvidia" / "cu13" / "lib" / "libcublas.so.13")
    lt = _touch(site / "nvidia" / "cu13" / "lib" / "libcublasLt.so.13")
    _touch(site / "nvidia" / "cu13" / "include" / "cublas_v2.h")
    driver = _touch(tmp_path / "nvidia" / "lib64" / "libcuda.so.1")
    args, ld, notes = gb.cuda_cmake_hints(toolkit, [tmp_path / "elsewhere", site], [tmp_path / "nvidia" / "lib64"])
    assert f"-DCUDA_cublas_LIBRARY={cublas}" in args and f"-DCUDA_cublasLt_LIBRARY={lt}" in args
    assert f"-DCMAKE_CUDA_FLAGS=-I{site / 'nvidia' / 'cu13' / 'include'}" in args
    assert f"-DCUDA_cuda_driver_LIBRARY={driver}" in args
    assert not any("cudart" in a for a in args), "the toolkit's own cudart is used"
    assert ld == [str(cublas.parent)]


def test_cuda_hints_add_nothing_for_a_complete_toolkit_and_fall_back_without_a_driver(tmp_path):
    toolkit = tmp_path / "cuda"
    for name in ("libcublas.so", "libcublasLt.so", "libcudart.so"):
        _touch(toolkit / "lib64" / name)
    _touch(toolkit / "include" / "cublas_v2.h")
    assert gb.cuda_cmake_hints(toolkit, [], [])[0] == ["-DGGML_CUDA_NO_VMM=ON"]
    _touch(toolkit / "lib64" / "stubs" / "libcuda.so")
    assert gb.cuda_cmake_hints(toolkit, [], []) == ([], [], [])


def test_find_nvcc_prefers_the_toolkit_folder(tmp_path):
    nvcc = _touch(tmp_path / "cuda" / "bin" / "nvcc")
    nvcc.chmod(0o755)
    assert gb.find_nvcc({"CUDA_HOME": str(tmp_path / "cuda")}) == str(nvcc)


def test_a_failed_background_build_leaves_a_record_that_the_check_reads(tmp_path):
    """make gpu-check builds llama.cpp beside the training checks: its end, failed too, must reach gpu_check."""
    site = tmp_path / "site"
    site.mkdir()
    with pytest.raises(SystemExit, match="run the wheels phase"):
        gb.build_llama(str(site), tmp_path / "no-build-dir", jobs=1, log_dir=tmp_path, check=False)
    record = gb.wait_for_build(str(site), timeout=1)
    assert record["ok"] is False and "wheels phase" in record["error"] and record["seconds"] is not None
    with pytest.raises(TimeoutError, match="had not finished"):
        gb.wait_for_build(str(tmp_path / "elsewhere"), timeout=0.1, poll=0.05)
