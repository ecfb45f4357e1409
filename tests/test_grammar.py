"""The nSLIP GBNF grammar, checked with llama.cpp's own grammar engine on the tiny model's vocabulary.

Two directions: every string the grammar lets llama.cpp sample decodes (and is canonical), and every
dataset target is admitted. Malformed messages are refused by the same engine. llama.cpp runs in a
child process (one for all verdicts, one for sampling), so a crash there fails a test, not the run.

The same text is the grammar vLLM and SGLang enforce through xgrammar (``structured_outputs.grammar``,
``scripts/serve_vllm.py``): xgrammar, compiled for the tiny model's tokenizer, must give the same
verdict as llama.cpp on every text here.
"""

import random

import pytest

from slipcore_nb import export
from slipcore_nb.dataset import load_split
from grammar_checker import GrammarChecker
from slipcore_nb.grammar import nslip_gbnf, write_gbnf
from slipcore_nb.native import run_in_child
from slipcore_nb.prompts import PROMPT
from slipcore_nb.protocol import (MAX_INT_DIGITS, MAX_STRING_CHARS, Act, Frame, Message, NSlipError, Slot, decode, encode,
                                  to_base62)
from slipcore_nb.answering import load_llama
from slipcore_nb.tiny import build_tiny

TARGETS = [ex["target"] for split in ("train", "eval") for ex in load_split(split)]
MALFORMED = [
    ('@aB|f1|c1|S1|d0|T2#', "act code 11 is out of range"),
    ('@a4|f5|c1|S1|d0|T2#', "frame code 5 is out of range"),
    ('@a4|f1|c01|S1|d0|T2#', "leading zero (not canonical)"),
    ('@f1|a4|c1|S1|d0|T2#', "header out of order"),
    ('@a4|f1|c1|S1|d0#', "turn missing"),
    ('@a4|f1|c1|S1|d0|T2|k1|g1#', "slots out of SLOT_ORDER"),
    ('@a4|f1|c1|S1|d0|T2|g1|g2#', "duplicate slot"),
    ('@a4|f1|c1|S1|d0|T2|x1#', "unknown prefix"),
    ('@a4|f1|c1|S1|d0|T2|t"a\\x"#', "bad escape"),
    ('@a4|f1|c1|S1|d0|T2|t"a"b"#', "unescaped quote"),
    ('@a4|f1|c1|S1|d0|T2|t"a\nb"#', "newline in a tag"),
    ('@a4|f1|c1|S1|d0|T2|tpl@n#', "neither a number nor a quoted string"),
    ('@a4|f"1"|c1|S1|d0|T2#', "a string in the header"),
    ('@a4|f1|c1|S1|d0|T2|g#', "empty value"),
    ('@a4|f1|c1|S1|d0|T2', "no closing #"),
    ('@a4|f1|c1|S1|d0|T2##', "text after #"),
    (' @a4|f1|c1|S1|d0|T2#', "leading space"),
    ("@a4|f1|c" + "1" * (MAX_INT_DIGITS + 1) + "|S1|d0|T2#", "number longer than the bound"),
    ('@a4|f1|c1|S1|d0|T2|t"' + "x" * (MAX_STRING_CHARS + 1) + '"#', "string longer than the bound"),
]
WIRE_TAGS = ['a|b', 'x#y', 'say "hi"', 'back\\slash', '']


def _canonical_messages(count: int = 300) -> list[str]:
    """Random canonical messages within the grammar's bounds (seeded)."""
    rng = random.Random(0)
    printable = "".join(chr(c) for c in range(0x20, 0x7F))
    texts = []
    for _ in range(count):
        # any slot: a number or a string, as the spec allows
        slots = {s: rng.randrange(62**MAX_INT_DIGITS) if rng.random() < 0.6 else
                 "".join(rng.choice(printable) for _ in range(rng.randrange(MAX_STRING_CHARS + 1)))
                 for s in Slot if rng.random() < 0.5}
        msg = Message(conv=rng.randrange(10**9), turn=rng.randrange(1000), src=rng.randrange(62),
                      dst=rng.randrange(62), act=rng.choice(list(Act)), frame=rng.choice(list(Frame)), slots=slots)
        texts.append(encode(msg))
    return texts


def _tagged(tag: str) -> str:
    return encode(Message(conv=1, turn=2, src=1, dst=0, act=Act.PROPOSE, frame=Frame.PLAN, slots={Slot.TAG: tag}))


CANONICAL = _canonical_messages()


def _mutated(count: int = 600) -> list[str]:
    """Canonical messages with one character deleted, inserted or replaced (seeded): near misses."""
    rng = random.Random(1)
    alphabet = "0123456789AZaz@#|\"\\ afcSdTgkprqsuet\n\x01"
    texts = []
    for _ in range(count):
        wire = rng.choice(CANONICAL[:100] + TARGETS[:100])
        i = rng.randrange(len(wire))
        ch = rng.choice(alphabet)
        texts.append(rng.choice([wire[:i] + wire[i + 1:], wire[:i] + ch + wire[i:], wire[:i] + ch + wire[i + 1:]]))
    return texts


MUTATED = _mutated()


def _verdicts_in_llama_cpp(gguf, texts: list[str]) -> dict[str, bool]:
    checker = GrammarChecker(gguf)
    try:
        return {text: checker.accepts(text) for text in texts}
    finally:
        checker.close()


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    out = tmp_path_factory.mktemp("grammar")
    return export.to_gguf(build_tiny(), out, types=("f16",), name="tiny")["f16"].path


@pytest.fixture(scope="module")
def admitted(gguf):
    """llama.cpp's verdict on every text these tests ask about, from one child process."""
    texts = TARGETS + CANONICAL + [text for text, _ in MALFORMED] + [_tagged(tag) for tag in WIRE_TAGS] + MUTATED
    return run_in_child(_verdicts_in_llama_cpp, gguf, texts, what=f"llama.cpp's grammar engine on {gguf.name}")


def _verdicts_in_xgrammar(model_dir, texts: list[str]) -> dict[str, bool]:
    """xgrammar's verdicts: the whole text accepted, then the end of generation allowed."""
    import xgrammar
    from transformers import AutoTokenizer

    info = xgrammar.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(model_dir))
    compiled = xgrammar.GrammarCompiler(info).compile_grammar(nslip_gbnf())
    verdicts = {}
    for text in texts:
        matcher = xgrammar.GrammarMatcher(compiled)
        verdicts[text] = (matcher.accept_string(text) and matcher.accept_token(info.stop_token_ids[0])
                          and matcher.is_terminated())
    return verdicts


def test_xgrammar_gives_the_same_verdicts_as_llama_cpp(admitted):
    """vLLM's grammar engine and llama.cpp's agree: dataset targets in, malformed messages out."""
    verdicts = run_in_child(_verdicts_in_xgrammar, build_tiny(), list(admitted), what="xgrammar on the nSLIP grammar")
    assert all(verdicts[text] for text in TARGETS)
    assert not any(verdicts[text] for text, _ in MALFORMED)
    assert [text for text in admitted if verdicts[text] != admitted[text]] == []


def test_grammar_is_built_from_the_protocol_tables():
    text = nslip_gbnf()
    assert text.startswith('root ::= "@" "a" act "|f" frame "|c" int "|S" int "|d" int "|T" int slot-goal-id? ')
    assert "act ::= " + " | ".join(f'"{to_base62(a)}"' for a in Act) + "\n" in text
    assert "frame ::= " + " | ".join(f'"{to_base62(f)}"' for f in Frame) + "\n" in text
    order = [text.index(f"slot-{s.name.lower().replace('_', '-')}?") for s in Slot]
    assert order == sorted(order)
    assert 'slot-status ::= "|u" value\n' in text and "value ::= int | string\n" in text  # either type, any slot
    assert nslip_gbnf(max_int_digits=None, max_string_chars=None).count("{0,") == 0


def test_the_codec_reads_exactly_what_the_grammar_admits(admitted):
    """On ASCII text the grammar admits a message iff decode reads it and it is canonical (decode also
    reads slots in any order, as SLIPCore's reference writes them; re-encoding puts them in order)."""
    def canonical(text: str) -> bool:
        try:
            return encode(decode(text)) == text
        except NSlipError:
            return False

    texts = MUTATED + CANONICAL + [text for text, _ in MALFORMED]
    disagree = [text for text in texts if admitted[text] != canonical(text)]
    assert disagree == [] and 50 < sum(admitted[t] for t in MUTATED) < len(MUTATED) - 50


def test_every_dataset_target_is_admitted(admitted):
    refused = [t for t in TARGETS if not admitted[t]]
    assert len(TARGETS) > 1000 and refused == []


def test_canonical_messages_within_the_bounds_are_admitted(admitted):
    assert [text for text in CANONICAL if not admitted[text]] == []


@pytest.mark.parametrize("text, why", MALFORMED, ids=[why for _, why in MALFORMED])
def test_malformed_messages_are_refused(admitted, text, why):
    assert not admitted[text], why


def test_escapes_and_wire_characters_inside_tags_are_admitted(admitted):
    for tag in WIRE_TAGS:
        text = _tagged(tag)
        assert admitted[text] and decode(text).slots[Slot.TAG] == tag


def _sample_under_the_grammar(gguf, samples: int) -> list[str]:
    """High-temperature samples from a random model with the nSLIP grammar (runs in a child process)."""
    from llama_cpp import LlamaGrammar

    llm = load_llama(gguf, n_ctx=1024)
    grammar = LlamaGrammar.from_string(nslip_gbnf(), verbose=False)
    texts = []
    try:
        for i in range(samples):
            out = llm(PROMPT.prompt(f"Goal[{i}]: anything"), grammar=grammar, temperature=2.0, top_k=0,
                      top_p=1.0, min_p=0.0, max_tokens=600, seed=i)["choices"][0]
            assert out["finish_reason"] == "stop", out  # the grammar ended it, not the token limit
            texts.append(out["text"])
    finally:
        llm.close()
    return texts


def test_every_sampled_string_decodes(gguf):
    """Whatever the grammar lets a random model sample at high temperature is canonical nSLIP."""
    texts = run_in_child(_sample_under_the_grammar, gguf, 40, what=f"llama.cpp sampling from {gguf.name}")
    for text in texts:
        assert encode(decode(text)) == text
    assert len({decode(t).act for t in texts}) >= 6  # the sampler really explored
    assert any(Slot.TAG in decode(t).slots for t in texts)


def test_write_gbnf(tmp_path):
    path = write_gbnf(tmp_path / "nslip.gbnf")
    assert path.read_text() == nslip_gbnf()
