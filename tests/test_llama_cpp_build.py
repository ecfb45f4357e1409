"""llama.cpp's source and build rules: the GPU and compiler read without torch, a build for the GPU present."""

import io
import subprocess
import tarfile
from pathlib import Path

from slipcore_nb import llama_cpp_build


def test_gpu_arch_is_read_from_nvidia_smi_without_torch(monkeypatch):
    monkeypatch.setattr(llama_cpp_build.shutil, "which", lambda tool: "/usr/bin/" + tool)
    reply = lambda out, rc=0: (lambda *a, **k: subprocess.CompletedProcess(a, rc, out, ""))  # noqa: E731
    assert llama_cpp_build.gpu_arch(reply("7.5\n")) == "75"  # T4
    assert llama_cpp_build.gpu_arch(reply("8.0\n8.0\n")) == "80"
    assert llama_cpp_build.gpu_arch(reply("", 9)) is None
    monkeypatch.setattr(llama_cpp_build.shutil, "which", lambda tool: None)
    assert llama_cpp_build.gpu_arch(reply("7.5\n")) is None


def test_cuda_build_is_for_the_gpu_present_and_the_cpu_build_is_portable():
    t4 = llama_cpp_build.llama_build("75", "12.8")
    assert t4.cuda and "-DGGML_CUDA=on" in t4.cmake_args and "-DCMAKE_CUDA_ARCHITECTURES=75" in t4.cmake_args
    cpu = llama_cpp_build.llama_build(None, None)
    assert not cpu.cuda and "CUDA" not in cpu.cmake_args
    for build in (t4, cpu):
        assert "-DGGML_NATIVE=OFF" in build.cmake_args and "-DLLAVA_BUILD=OFF" in build.cmake_args
    assert llama_cpp_build.llama_build("75", None) == cpu  # a GPU but no nvcc: CPU build
    cache = Path("/drive/cache")
    builds = (t4, llama_cpp_build.llama_build("89", "12.8"), llama_cpp_build.llama_build("75", "13.0"), cpu)
    dirs = {b.wheel_dir(cache) for b in builds}
    assert len(dirs) == 4  # a wheel is reused only on the same GPU arch and CUDA release


def test_extraction_takes_only_the_converter_files(tmp_path):
    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name in ["convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/llama.py",
                     "gguf-py/gguf/__init__.py", "gguf-py/tests/test_x.py", "src/llama.cpp", "../evil.py"]:
            data = b"# " + name.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-9.9.9/vendor/llama.cpp/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    llama_cpp_build._extract_converter(sdist, tmp_path / "llama.cpp-9.9.9")
    files = sorted(str(p.relative_to(tmp_path / "llama.cpp-9.9.9"))
                   for p in (tmp_path / "llama.cpp-9.9.9").rglob("*") if p.is_file())
    assert files == ["conversion/llama.py", "convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert not (tmp_path / "evil.py").exists()
