"""Token economics: JSON renderings carry the same data, and counts come from a real tokenizer."""

import json

import pytest

from slipcore_nb.dataset import load_split
from slipcore_nb.economics import as_dict, renderings, savings_table, token_counts
from slipcore_nb.protocol import decode


@pytest.fixture(scope="module")
def examples():
    return load_split("eval")[:40]


def test_json_shapes_hold_the_same_message(examples):
    for ex in examples:
        msg = decode(ex["target"])
        shapes = renderings(msg)
        assert shapes["nslip"] == ex["target"]
        assert json.loads(shapes["json_compact"]) == as_dict(msg)
        verbose = json.loads(shapes["json_verbose"])
        assert {**verbose["header"], **verbose["slots"]} == as_dict(msg)
        assert "\n  " in shapes["json_verbose"] and " " not in shapes["json_compact"]


def test_counts_and_savings_with_the_tiny_models_tokenizer(examples):
    from transformers import AutoTokenizer

    from slipcore_nb.tiny import build_tiny

    tokenizer = AutoTokenizer.from_pretrained(build_tiny())
    counts = token_counts(tokenizer, examples)
    assert len(counts) == len(examples)
    assert (counts.nslip < counts.json_compact).all() and (counts.json_compact < counts.json_verbose).all()
    table = savings_table(counts)
    assert list(table.index)[-1] == "overall" and set(table.index[:-1]) == {ex["role"] for ex in examples}
    assert 0 < table.loc["overall", "saved vs compact %"] < table.loc["overall", "saved vs verbose %"] < 100
