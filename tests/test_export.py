"""Export end to end on the tiny model: adapter, merge, GGUF f16/q8_0/Q4_K_M, LoRA GGUF, clear errors.

Everything is real: llama.cpp's converter from the cache (``make venv`` fetches it), llama.cpp's
quantizer, and llama.cpp (llama-cpp-python) loading each file and answering. Every GGUF is loaded
in a child process (:func:`slipcore_nb.native.run_in_child`): a crash in llama.cpp fails that one
test with the file and the signal in its message instead of killing the test session.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from slipcore_nb import export, llama_cpp_build
from slipcore_nb.dataset import load_split
from slipcore_nb.export import ExportError
from slipcore_nb.native import run_in_child
from slipcore_nb.prompts import PROMPT
from slipcore_nb.answering import load_llama
from slipcore_nb.tiny import build_tiny

PROMPT_TEXT = PROMPT.prompt("You are the planner agent (id 2). Goal[1]: Add rate limiting. Respond with one nSLIP message.")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peft(tiny, **extra):
    """A LoRA whose B is random (not zero), so merging visibly changes the model."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS,
                                           init_lora_weights=False, **extra))


def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(PROMPT_TEXT, return_tensors="pt")).logits[0, -1].float()


def _last_logits_in_llama_cpp(gguf, lora=None):
    llm = load_llama(gguf, lora, n_ctx=256, logits_all=True)
    try:
        tokens = llm.tokenize(PROMPT_TEXT.encode())
        llm.eval(tokens)
        return np.array(llm.scores[len(tokens) - 1])
    finally:
        llm.close()


def _llama_cpp_logits(gguf, lora=None):
    return run_in_child(_last_logits_in_llama_cpp, gguf, lora, what=f"llama.cpp scoring with {Path(gguf).name}")


def _completion_tokens(gguf):
    llm = load_llama(gguf, n_ctx=256)
    try:
        return llm(PROMPT_TEXT, max_tokens=8, temperature=0)["usage"]["completion_tokens"]
    finally:
        llm.close()


@pytest.fixture(scope="module")
def tiny():
    return build_tiny()


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny)


@pytest.fixture(scope="module")
def exported(tiny, tokenizer, tmp_path_factory):
    """The tiny model's path through export, as notebook 04 runs it (LoRA + trained embeddings)."""
    out = tmp_path_factory.mktemp("export")
    model = _peft(tiny, modules_to_save=["embed_tokens", "lm_head"])
    adapter = export.save_adapter(model, tokenizer, out / "lora")
    merged = export.merge_to_16bit(model, tokenizer, out / "merged")
    ggufs = export.to_gguf(merged.path, out / "gguf", name="tiny")
    return {"model": model, "adapter": adapter, "merged": merged, "gguf": ggufs, "out": out}


def test_converter_is_in_the_cache():
    folder = llama_cpp_build.find_converter()
    assert (folder / "convert_hf_to_gguf.py").is_file() and (folder / "convert_lora_to_gguf.py").is_file()
    assert (folder / "gguf-py" / "gguf" / "gguf_reader.py").is_file() and (folder / "conversion").is_dir()


def test_adapter_folder_reloads_with_peft(exported):
    names = {p.name for p in exported["adapter"].path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.model"} <= names


def test_merged_folder_matches_the_lora_model(exported, tokenizer, tiny):
    merged_dir = exported["merged"].path
    assert (merged_dir / "tokenizer.model").is_file()  # the converter needs the SentencePiece model
    config = json.loads((merged_dir / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    lora, base = _logits(exported["model"], tokenizer), _logits(AutoModelForCausalLM.from_pretrained(tiny), tokenizer)
    assert (lora - base).abs().max() > 0.5  # the adapter matters ...
    assert torch.allclose(_logits(merged, tokenizer), lora, atol=0.05)  # ... and the merge kept it (bf16)
    assert any("lora_A" in name for name, _ in exported["model"].named_parameters())  # notebook model intact


def test_gguf_files_have_the_requested_tensor_types(exported):
    ggufs = exported["gguf"]
    assert list(ggufs) == ["f16", "q8_0", "q4_k_m"]
    assert [a.path.name for a in ggufs.values()] == ["tiny-F16.gguf", "tiny-Q8_0.gguf", "tiny-Q4_K_M.gguf"]
    assert ggufs["f16"].size_bytes > ggufs["q8_0"].size_bytes > ggufs["q4_k_m"].size_bytes
    assert "F16" in export.tensor_type_counts(ggufs["f16"].path)
    assert "Q8_0" in export.tensor_type_counts(ggufs["q8_0"].path)
    kinds = export.tensor_type_counts(ggufs["q4_k_m"].path)
    assert kinds.get("Q4_K", 0) > 0 and kinds.get("Q6_K", 0) > 0, kinds  # real K-quants, not a fallback
    assert {"F16", "Q8_0"}.isdisjoint(kinds)
    assert all(a.row()["MB"] > 0 for a in ggufs.values())


@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_k_m"])
def test_llama_cpp_loads_each_gguf_and_answers(exported, kind):
    gguf = exported["gguf"][kind].path
    assert run_in_child(_completion_tokens, gguf, what=f"llama.cpp answering with {gguf.name}") > 0


def test_f16_gguf_agrees_with_the_merged_folder(exported, tokenizer):
    merged = AutoModelForCausalLM.from_pretrained(exported["merged"].path, dtype=torch.float32)
    hf = _logits(merged, tokenizer).numpy()
    gguf = _llama_cpp_logits(exported["gguf"]["f16"].path)
    assert np.abs(hf - gguf).max() < 0.05
    assert hf.argmax() == gguf.argmax()


def test_eos_token_read_from_the_gguf(exported):
    assert export.eos_token(exported["gguf"]["q4_k_m"].path) == "</s>"


def _vocab_answers(gguf: str, text: str) -> dict:
    from slipcore_nb.gguf_vocab import GGUFVocab

    with GGUFVocab(gguf) as vocab:
        return {"ids": vocab.tokenize(text, add_bos=True, special=True), "eos": vocab.token_text(vocab.eos),
                "kind": vocab.metadata("tokenizer.ggml.model"), "absent": vocab.metadata("no.such.key"),
                "pieces": b"".join(vocab.piece(t) for t in vocab.tokenize(text)), "size": vocab.size}


def test_the_vocabulary_alone_tokenizes_as_the_hf_tokenizer_does(exported, tokenizer):
    """GGUFVocab loads no context (the CUDA build crashed making one for a vocab-only model)."""
    from slipcore_nb.native import run_in_child

    text = 'Goal[1]: caf\u00e9 \u65e5\u672c @a4|f1|t"plan"#</s>'
    got = run_in_child(_vocab_answers, str(exported["gguf"]["f16"].path), text, what="GGUFVocab on the tiny GGUF")
    assert got["ids"] == tokenizer(text).input_ids
    assert got["eos"] == tokenizer.eos_token and got["kind"] == "llama" and got["absent"] is None
    assert got["pieces"] == text.encode() and got["size"] == len(tokenizer)  # special=False: "</s>" as text


def test_lora_gguf_applied_by_llama_cpp_equals_the_merged_model(tiny, tokenizer, tmp_path):
    model = _peft(tiny)
    adapter = export.save_adapter(model, tokenizer, tmp_path / "lora")
    lora_gguf = export.adapter_to_gguf(adapter.path, tiny, tmp_path / "gguf", name="tiny")
    assert lora_gguf.path.name == "tiny-lora-F16.gguf" and lora_gguf.size_bytes > 0
    base = export.to_gguf(tiny, tmp_path / "gguf", types=("f16",), name="base")["f16"]
    merged_dir = export.merge_to_16bit(model, tokenizer, tmp_path / "merged").path
    merged = export.to_gguf(merged_dir, tmp_path / "gguf", types=("f16",), name="merged")["f16"]
    with_lora, plain = _llama_cpp_logits(base.path, lora_gguf.path), _llama_cpp_logits(base.path)
    assert np.abs(with_lora - plain).max() > 0.5  # llama.cpp applied the adapter
    assert np.abs(with_lora - _llama_cpp_logits(merged.path)).max() < 0.05


def test_adapter_with_whole_trained_layers_is_refused(exported, tiny):
    with pytest.raises(ExportError, match="modules_to_save.*serve the merged GGUF"):
        export.adapter_to_gguf(exported["adapter"].path, tiny, exported["out"] / "gguf")


def test_missing_pieces_raise_one_clear_error(tmp_path, monkeypatch, tiny):
    with pytest.raises(ExportError, match="no merged model at .*run merge_to_16bit first"):
        export.to_gguf(tmp_path / "merged", tmp_path / "gguf")
    with pytest.raises(ExportError, match="unknown GGUF type"):
        export.to_gguf(tiny, tmp_path / "gguf", types=("q3_xs",))
    with pytest.raises(ExportError, match="no LoRA adapter at .*run save_adapter first"):
        export.adapter_to_gguf(tmp_path / "lora", tiny, tmp_path / "gguf")
    monkeypatch.setenv("SLIPCORE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ExportError, match="llama.cpp converter not found: run .*--fetch-converter.* or set LLAMA_CPP_DIR"):
        export.to_gguf(tiny, tmp_path / "gguf", types=("f16",))
    monkeypatch.setenv("LLAMA_CPP_DIR", str(tmp_path))
    with pytest.raises(llama_cpp_build.LlamaCppError, match="LLAMA_CPP_DIR=.* holds no convert_hf_to_gguf.py"):
        llama_cpp_build.find_converter()
    with pytest.raises(ExportError, match="LLAMA_CPP_DIR=.* holds no convert_hf_to_gguf.py"):
        export.to_gguf(tiny, tmp_path / "gguf", types=("f16",))


def test_a_tokenizer_llama_cpp_reads_differently_is_caught(exported, tmp_path):
    export.check_tokenizer(exported["gguf"]["f16"].path, exported["merged"].path)  # the real pair agrees
    # A tokenizer trained on another corpus: same kind of files, other ids.
    other = build_tiny(load_split("eval"), root=tmp_path)
    with pytest.raises(ExportError, match="disagree on a training prompt.*fix the tokenizer files"):
        export.check_tokenizer(exported["gguf"]["f16"].path, other)


def test_converter_failure_names_its_log(tmp_path, tiny):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"architectures": ["NoSuchModelForCausalLM"]}))
    with pytest.raises(ExportError, match=r"convert_hf_to_gguf.py failed .*full log: .*broken-F16.log"):
        export.to_gguf(broken, tmp_path, types=("f16",), name="broken")


def test_a_bpe_tokenizer_is_not_saved_as_sentencepiece(tiny, tmp_path):
    """Qwen2's tokenizer is byte-level BPE whose ``vocab_file`` is vocab.json: copied to tokenizer.model,
    llama.cpp's converter would read it as SentencePiece and fail."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import GPT2Tokenizer

    bpe = Tokenizer(BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator([ex["target"] for ex in load_split("eval")],
                            trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.model.save(str(tmp_path))
    tokenizer = GPT2Tokenizer(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    assert tokenizer.vocab_file.endswith("vocab.json")
    merged = export.merge_to_16bit(_peft(tiny), tokenizer, tmp_path / "merged").path
    assert (merged / "tokenizer_config.json").is_file() and not (merged / "tokenizer.model").exists()


def test_saving_over_an_earlier_run_leaves_no_stale_tokenizer_model(tiny, tmp_path):
    """A second run into the same folder with another tokenizer: its tokenizer.model replaces the first."""
    other = build_tiny(load_split("eval"), root=tmp_path / "other")  # another corpus, another vocabulary
    folder = tmp_path / "lora"
    for source in (other, tiny):
        export.save_adapter(_peft(tiny), AutoTokenizer.from_pretrained(source), folder)
        assert (folder / "tokenizer.model").read_bytes() == (Path(source) / "tokenizer.model").read_bytes()
