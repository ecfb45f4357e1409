"""llama.cpp's own HTTP server, built from the same llama.cpp source as the converter and the runtime.

``llama-server`` is what agents should talk to: parallel slots with continuous batching, a prompt
cache per slot (an instruction prefix shared by many requests is computed once), a GBNF grammar and
LoRA scales per request, and the OpenAI-compatible ``/v1/completions`` that vLLM and SGLang speak too
(:mod:`slipcore_nb.completions`). llama-cpp-python ships no server binary, so :func:`build` compiles
one from ``vendor/llama.cpp`` in the installed llama-cpp-python's sdist (fetched by
:mod:`slipcore_nb.llama_cpp_build`, as the converter is; cmake and a C++ compiler; about 5 minutes on
2 cores), once, into ``$SLIPCORE_CACHE``.
``LLAMA_SERVER`` names a binary built elsewhere (a CUDA build, say).

    python -m slipcore_nb.llama_server --build
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import llama_cpp_build
from .artifacts import cache_root
from .machine import usable_cores

BINARY = "llama-server"
# Static, CPU-tuned, no curl (models come as files, never from the network), server only.
CMAKE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON")


class LlamaServerError(RuntimeError):
    """llama-server cannot be built or started; the message says what is missing and what to run."""


def build_options(arch: str | None, cuda_release: str | None) -> tuple[str, tuple[str, ...]]:
    """(build variant, extra cmake options). With a GPU and nvcc: the CUDA build 04 makes of
    llama-cpp-python (:func:`slipcore_nb.llama_cpp_build.llama_build`: this GPU's architecture only, no
    flash-attention kernels, portable CPU code), which no test builds (the tests run on CPUs, and
    ``make gpu-check`` builds llama-cpp-python, not llama-server). Else the native CPU build."""
    build = llama_cpp_build.llama_build(arch, cuda_release)
    return (build.variant, tuple(build.cmake_args.split())) if build.cuda else ("cpu", ())


def _this_machine() -> tuple[str, tuple[str, ...]]:
    compiler = llama_cpp_build.nvcc()
    return build_options(llama_cpp_build.gpu_arch(), compiler[1] if compiler else None)


def build_dir() -> Path:
    variant, _ = _this_machine()
    return cache_root() / f"llama-server-{llama_cpp_build.installed_version()}" / variant


def find_binary() -> Path | None:
    """``LLAMA_SERVER`` if set, else the cached build for the installed llama-cpp-python, else None."""
    if env := os.environ.get("LLAMA_SERVER"):
        if not os.access(env, os.X_OK):
            raise LlamaServerError(f"LLAMA_SERVER={env} is not an executable file: point it at llama-server or unset it.")
        return Path(env)
    binary = build_dir() / BINARY
    return binary if os.access(binary, os.X_OK) else None


def missing_tools() -> list[str]:
    """Build tools not on PATH (the build needs cmake and a C++ compiler)."""
    missing = [] if shutil.which("cmake") else ["cmake"]
    if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", "c++"), "g++", "clang++")):
        missing.append("a C++ compiler")
    return missing


def build(jobs: int | None = None, quiet: bool = True) -> Path:
    """The llama-server binary, compiled from the vendored llama.cpp if not built yet (idempotent)."""
    if binary := find_binary():
        return binary
    if missing := missing_tools():
        raise LlamaServerError(
            f"building llama-server needs {' and '.join(missing)}: install them (Debian/Ubuntu: "
            "`sudo apt-get install cmake build-essential`; or `pip install cmake`), or set LLAMA_SERVER "
            "to a llama-server you built.")
    target = build_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llama-server-build-", dir=target.parent) as work:
        work = Path(work)
        source = _extract_llama_cpp(llama_cpp_build.download_sdist(work), work / "src")
        out = work / "build"
        log = target.parent / f"{target.name}.build.log"
        steps = [["cmake", "-S", str(source), "-B", str(out), *CMAKE_OPTIONS, *_this_machine()[1]],
                 ["cmake", "--build", str(out), "--target", BINARY, "-j", str(jobs or usable_cores())]]
        with open(log, "w") as sink:
            for step in steps:
                done = subprocess.run(step, stdout=sink if quiet else None, stderr=subprocess.STDOUT)
                if done.returncode != 0:
                    raise LlamaServerError(f"`{' '.join(step[:3])} ...` failed (exit {done.returncode}); "
                                           f"the build log is {log}.")
        built = next(out.rglob(BINARY), None)
        if built is None:
            raise LlamaServerError(f"the build finished without a {BINARY} binary; see {log}.")
        staging = work / "install"
        staging.mkdir()
        shutil.copy2(built, staging / BINARY)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first; its binary is the same
            if find_binary() is None:
                raise
    return target / BINARY


def _extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """``vendor/llama.cpp`` of the sdist, without its vocabulary test files (a third of its size)."""
    llama_cpp_build.extract_vendored(sdist, dest, lambda rel: not rel.startswith("models/ggml-vocab"))
    if not (dest / "CMakeLists.txt").is_file():
        raise LlamaServerError(f"{sdist.name} has no vendor/llama.cpp/CMakeLists.txt to build llama-server from.")
    return dest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """``llama-server`` on loopback for one GGUF: started, health-checked and stopped by the library.

    ``parallel`` slots share the batch (continuous batching); each gets ``ctx_per_slot`` tokens of
    context. ``loras`` are loaded at scale 0 and chosen per request (``lora=[{"id": 0, "scale": 1}]``),
    so one base serves several adapters. Repacked CPU buffers stay off as in
    :func:`slipcore_nb.answering.load_llama` (that path crashed on an AMX Xeon) unless ``extra_cpu_buffers``.
    Use it as a context manager; :attr:`base_url` is what an OpenAI-compatible client needs.
    """

    def __init__(self, gguf: str | Path, *, parallel: int = 4, ctx_per_slot: int = 512, threads: int | None = None,
                 loras: tuple[str | Path, ...] = (), extra_cpu_buffers: bool = False, port: int | None = None,
                 binary: str | Path | None = None, log: str | Path | None = None, extra_args: tuple[str, ...] = ()):
        self.gguf = Path(gguf)
        if not self.gguf.is_file():
            raise LlamaServerError(f"no model file {self.gguf}: export one with notebook 04 first.")
        for name, value, least in (("parallel", parallel, 1), ("ctx_per_slot", ctx_per_slot, 1),
                                   ("threads", threads, 1), ("port", port, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least
                                      or (name == "port" and value > 65535)):
                raise ValueError(f"LlamaServer {name} must be " + ("a port 1..65535" if name == "port" else
                                 f"an int of at least {least}") + f", got {value!r}")
        if isinstance(loras, (str, Path)):
            raise ValueError(f"LlamaServer loras must be a tuple of adapter files, got the single path {str(loras)!r}")
        self.parallel, self.ctx_per_slot, self.threads = parallel, ctx_per_slot, threads
        self.loras = tuple(Path(lora) for lora in loras)
        self.extra_cpu_buffers = extra_cpu_buffers
        self.extra_args = tuple(extra_args)  # any other llama-server flags, e.g. speculative decoding
        self.port = port or free_port()
        self.binary = Path(binary) if binary else None
        self.log = Path(log) if log else Path(tempfile.gettempdir()) / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line, printable: what a user would type to run the same server by hand."""
        binary = self.binary or find_binary() or build_dir() / BINARY
        command = [str(binary), "--model", str(self.gguf), "--host", "127.0.0.1", "--port", str(self.port),
                   "--parallel", str(self.parallel), "--ctx-size", str(self.parallel * self.ctx_per_slot),
                   "--threads", str(self.threads or usable_cores()), "--no-webui"]
        for lora in self.loras:
            command += ["--lora", str(lora)]
        if self.loras:
            command.append("--lora-init-without-apply")
        if not self.extra_cpu_buffers:
            command.append("--no-repack")
        if llama_cpp_build.gpu_arch():  # every layer on the GPU (a CPU-only binary ignores it with a warning)
            command += ["--n-gpu-layers", "999"]
        return command + list(self.extra_args)

    def start(self, timeout: float = 120) -> "LlamaServer":
        import httpx

        missing = [str(lora) for lora in self.loras if not lora.is_file()]
        if missing:  # checked here, not in __init__: command() may print a server to start elsewhere
            raise LlamaServerError(f"LlamaServer loras: no adapter file {missing[0]} (adapter_to_gguf writes one)")
        self.binary = self.binary or build()
        with open(self.log, "w") as sink:
            self.process = subprocess.Popen(self.command(), stdout=sink, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        atexit.register(self.stop)  # a notebook whose cell failed before its stop cell leaves no server behind
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LlamaServerError(f"llama-server exited with status {self.process.returncode} while starting "
                                       f"on {self.gguf.name}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    self._adapters_off()
                    return self
            except httpx.HTTPError:
                pass  # not listening yet, or still loading (503)
            time.sleep(0.2)
        self.stop()
        raise LlamaServerError(f"llama-server did not report healthy within {timeout:.0f} s:\n{self.log_tail()}")

    def _adapters_off(self) -> None:
        """Every LoRA at scale 0 until a request asks for one: this llama-server still reports and applies
        scale 1 after ``--lora-init-without-apply``, so a request without ``lora`` would get all of them."""
        if self.loras:
            import httpx

            httpx.post(f"{self.base_url}/lora-adapters", json=[{"id": i, "scale": 0.0} for i in range(len(self.loras))],
                       timeout=10).raise_for_status()

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> "LlamaServer":
        """The same server started cold, on the same port: llama-server keeps the prompts it has answered and
        takes a repeated one from its cache, so runs compared side by side each start from a restart."""
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build llama-server from the installed llama-cpp-python's llama.cpp.")
    parser.add_argument("--build", action="store_true", help="compile it into the cache if it is not there")
    args = parser.parse_args(argv)
    binary = build(quiet=False) if args.build else find_binary()
    print(binary or f"not built yet: python -m slipcore_nb.llama_server --build (into {build_dir()})")


if __name__ == "__main__":
    main()
