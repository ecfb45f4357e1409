"""One loader, so notebooks, scripts and tests load models the same way: a model with LoRA adapters
for training, a trained adapter on its base, a merged folder for inference, a tokenizer alone.

Loading goes through Unsloth's ``FastLanguageModel`` (it also has a CPU path); when Unsloth cannot be
imported or used, plain transformers + peft loads the same model with the same LoRA settings, and the
result says why. Separate from the registry and the weights because this is the one place that
imports Unsloth, transformers and peft.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import distributed
from .machine import Hardware, detect_hardware
from .registry import ModelSpec, choose_model, get_spec
from .weights import base_folder, model_path

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BACKENDS = ("unsloth", "transformers")


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


def load_tokenizer(name: str):
    """Just the tokenizer (for token counts before any weights are loaded)."""
    spec = get_spec(name)
    return _tokenizer(model_path(spec), spec)
