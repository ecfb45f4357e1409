"""The tiny CI model: offline, deterministic, K-quant-friendly shapes, a tokenizer that keeps prefixes apart."""

import json

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from slipcore_nb.dataset import load_split
from slipcore_nb.prompts import PROMPT
from slipcore_nb.tiny import WIRE_SYMBOLS, build_tiny

EXAMPLES = load_split("train")[:400]  # enough text for the tokenizer, builds in ~2 s


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny(EXAMPLES, seed=0, root=tmp_path_factory.mktemp("cache"))


def test_same_seed_same_bytes_other_seed_other_weights(folder, tmp_path):
    again = build_tiny(EXAMPLES, seed=0, root=tmp_path / "a")
    other = build_tiny(EXAMPLES, seed=1, root=tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.model", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (folder / "model.safetensors").read_bytes()
    assert (other / "tokenizer.model").read_bytes() == (folder / "tokenizer.model").read_bytes()


def test_cached_build_is_reused(folder):
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_tiny(EXAMPLES, seed=0, root=folder.parent) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_llama_shapes_are_multiples_of_256_and_small(folder):
    from transformers import AutoModelForCausalLM

    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] % 256 == 0 and config["intermediate_size"] % 256 == 0
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 6e6


def test_tokenizer_loads_with_eos_and_keeps_prefixes_apart(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>"
    target = '@a8|f3|cFo|SQ|dH|T4|gzz|kBX|reL|s1|t"eval_fail"#'
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(target, add_special_tokens=False)["input_ids"])
    # Every piece that holds a separator is exactly separator + prefix letter, never glued to a value.
    for piece in pieces:
        if "|" in piece or "@" in piece:
            assert piece in WIRE_SYMBOLS, pieces
    assert pieces[:2] == ["@a", "8"] and "|g" in pieces


def test_transformers_and_sentencepiece_agree(folder):
    """The llama.cpp converter reads tokenizer.model; training uses tokenizer.json: same ids and text."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    for ex in load_split("eval")[:50]:
        text = PROMPT.training_text(ex["input"], ex["target"], "")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == sp.encode(text)
        assert tokenizer.decode(ids) == text


def test_the_qwen2_family_shares_the_tokenizer(folder):
    """make gpu-check trains the GPU default's architecture small: Qwen2, biases on q/k/v, same tokenizer."""
    qwen2 = build_tiny(EXAMPLES, seed=0, root=folder.parent, family="qwen2")
    config = json.loads((qwen2 / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and qwen2 != folder
    assert (qwen2 / "tokenizer.model").read_bytes() == (folder / "tokenizer.model").read_bytes()
    with pytest.raises(ValueError, match="family must be one of"):
        build_tiny(EXAMPLES, root=folder.parent, family="mistral")
