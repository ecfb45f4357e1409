"""The tiny offline model used by CI: a SentencePiece tokenizer and a random-init Llama, built in seconds.

Nothing is downloaded. The tokenizer is trained on our own corpus (prompts and targets), so a
random model can learn the wire format in about a minute on two CPU cores. Two choices matter:

* every wire prefix (``|g``, ``@a``, ...) is a user-defined symbol, so a prefix never merges with
  its value (``|g`` + ``Z7``, never ``|gZ`` + ``7``); without that the tiny model barely learned;
* hidden and intermediate sizes are multiples of 256, so a Q4_K_M export really uses K-quants.

The result is a normal Hugging Face folder (safetensors, ``tokenizer.json``, and the raw
``tokenizer.model`` that the llama.cpp converter reads), cached under ``SLIPCORE_CACHE`` by a hash of
everything that went into it, so the same corpus and seed give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from .artifacts import cache_root
from .prompts import PROMPT
from .protocol import END, HEADER_FIELDS, SEP, SLOT_BY_PREFIX, START

# Bump when the recipe below changes, so old cache entries are not reused.
RECIPE_VERSION = 1
VOCAB_SIZE = 1024
# Llama shapes: ~2.9 M parameters; 256 is the K-quant block width.
ARCHITECTURE = dict(
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)
SPECIAL = {"unk": (0, "<unk>"), "bos": (1, "<s>"), "eos": (2, "</s>"), "pad": (3, "<pad>")}
# Each prefix glued to the separator before it, plus the newline (kept verbatim, it ends an answer).
WIRE_SYMBOLS = tuple(sep + p for sep in (START, SEP) for p in (*HEADER_FIELDS, *SLOT_BY_PREFIX)) + (END, "\n")


def corpus_from_examples(examples: list[dict]) -> list[str]:
    """The text the tokenizer learns from: each example rendered exactly as training shows it."""
    return [PROMPT.training_text(ex["input"], ex["target"], "") for ex in examples]


# The model classes a tiny model can have: Llama (CI), and Qwen2 (``make gpu-check``: the
# architecture of the GPU default, whose attention projections carry biases). Only the Llama goes to
# GGUF: for a Qwen2 llama.cpp's converter does not record add_prefix_space, so llama.cpp would
# tokenize this SentencePiece vocabulary differently (export.check_tokenizer refuses it).
FAMILIES = ("llama", "qwen2")


def build_tiny(examples: list[dict] | None = None, seed: int = 0, root: str | Path | None = None,
               family: str = "llama") -> Path:
    """The tiny model's folder, built on first use (a few seconds) and cached; ``examples`` default to train."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if examples is None:
        from .dataset import load_split

        examples = load_split("train")
    corpus = corpus_from_examples(examples)
    recipe = [RECIPE_VERSION, VOCAB_SIZE, ARCHITECTURE, seed, corpus] + ([family] if family != "llama" else [])
    digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    prefix = "tiny" if family == "llama" else f"tiny-{family}"
    folder = Path(root or cache_root()) / f"{prefix}-{digest}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    try:
        _write_tokenizer(corpus, staging)
        _write_model(seed, staging, family)
        os.replace(staging, folder)  # atomic: a half-built folder is never seen as the cache
    except OSError:
        if not (folder / "config.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_tokenizer(corpus: list[str], folder: Path) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buffer,
        vocab_size=VOCAB_SIZE,
        model_type="bpe",
        user_defined_symbols=list(WIRE_SYMBOLS),
        byte_fallback=True,  # any text encodes, even characters never seen in the corpus
        split_digits=True,
        # Keep text verbatim: no NFKC, no whitespace collapsing, no leading-space insertion.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        character_coverage=1.0,
        max_sentence_length=1 << 16,
        num_threads=1,  # deterministic
        minloglevel=2,
        **{f"{name}_id": idx for name, (idx, _) in SPECIAL.items()},
        **{f"{name}_piece": piece for name, (_, piece) in SPECIAL.items()},
    )
    (folder / "tokenizer.model").write_bytes(buffer.getvalue())
    config = {f"{name}_token": piece for name, (_, piece) in SPECIAL.items()}
    config.update(
        tokenizer_class="LlamaTokenizer",
        add_bos_token=True,
        add_eos_token=False,
        legacy=False,
        add_prefix_space=False,
        model_max_length=ARCHITECTURE["max_position_embeddings"],
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    # Let transformers write its fast tokenizer.json next to the raw model it was converted from.
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)


def _write_model(seed: int, folder: Path, family: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_class, model_class = (LlamaConfig, LlamaForCausalLM) if family == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_class(
        vocab_size=VOCAB_SIZE,
        bos_token_id=SPECIAL["bos"][0],
        eos_token_id=SPECIAL["eos"][0],
        pad_token_id=SPECIAL["pad"][0],
        **ARCHITECTURE,
    )
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.pad_token_id = SPECIAL["pad"][0]
    model.save_pretrained(folder)
