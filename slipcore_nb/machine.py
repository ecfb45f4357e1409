"""What this machine computes with: a CUDA GPU or not, the CPU's cores and its bf16 flags.

Separate because everything that decides by the machine (the model choice, the training defaults,
the loaders, the benchmarks' record of where they ran) asks the same question, and the answer needs
no model registry. torch is imported only inside :func:`detect_hardware`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


# The CPU features that decide how fast a CPU trains and serves: bf16 matmuls (AVX512-BF16, AMX) make
# Unsloth's CPU path train in bf16, 3-5x faster per step than fp32 on AVX2 alone (2.5 s vs 6.8-12.5 s).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def read_cpuinfo() -> str:
    """``/proc/cpuinfo``, or "" where there is none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_fields(cpuinfo: str) -> dict[str, str]:
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in fields.items()}


def cpu_description(cpuinfo: str) -> str | None:
    """The CPU's model name and its :data:`SPEED_FLAGS` (None without a cpuinfo)."""
    if not cpuinfo:
        return None
    fields = _cpu_fields(cpuinfo)
    flags = set(fields.get("flags", "").split())
    present = [flag for flag in SPEED_FLAGS if flag in flags]
    return f"{fields.get('model name', 'unknown CPU')} ({', '.join(present) or 'none of ' + ', '.join(SPEED_FLAGS)})"


def cpu_has_bf16(cpuinfo: str) -> bool:
    """Native bf16 matmuls (:data:`BF16_FLAGS`): where Unsloth's CPU path trains in bf16."""
    return bool(set(_cpu_fields(cpuinfo).get("flags", "").split()) & set(BF16_FLAGS))


@dataclass(frozen=True)
class Hardware:
    cuda: bool
    gpu: str | None
    cpu_cores: int
    cpu_capability: str
    # Native bfloat16 on the GPU. Unsloth's rule (compute capability 8.0 or newer), not
    # torch.cuda.is_bf16_supported(), which says True on a T4 because torch can emulate bf16 there.
    gpu_bf16: bool = False
    # torch's capability string cannot tell an AMX Xeon (bf16, 3-5x faster training) from an AVX-512 AMD.
    cpu: str | None = None
    cpu_bf16: bool = False

    def describe(self) -> str:
        if self.cuda:
            return f"CUDA GPU: {self.gpu} ({'bf16' if self.gpu_bf16 else 'fp16, no native bf16'})"
        return f"no CUDA GPU; CPU with {self.cpu_cores} cores ({self.cpu_capability})" + (
            f": {self.cpu}" if self.cpu else "")

    @property
    def half_dtype(self) -> str:
        """The 16-bit type this GPU computes in natively: bfloat16 from Ampere on, float16 before."""
        return "bfloat16" if self.gpu_bf16 else "float16"


def usable_cores() -> int:
    """The cores this process may run on. A container or ``taskset`` allows fewer than the machine has
    (``os.cpu_count``), and llama.cpp's spinning workers beyond them wait on each other."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def detect_hardware() -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    cpuinfo = read_cpuinfo()
    return Hardware(
        cuda=cuda,
        gpu=torch.cuda.get_device_name(0) if cuda else None,
        cpu_cores=usable_cores(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        gpu_bf16=cuda and torch.cuda.get_device_capability(0)[0] >= 8,
        cpu=cpu_description(cpuinfo),
        cpu_bf16=cpu_has_bf16(cpuinfo),
    )
