"""What the notebooks tell a learner to expect is what the result files measured.

The prose quotes no run of its own: each expectation names the README table, and this test holds its
numbers to the result file behind that table (``benchmarks/results/reliability.json``, and
``quantization.json`` for 04's choice of file). A new measurement that moves a number fails here until
the sentence is rewritten. The prose also carries no dated, per-machine run (no dates, no CPU models):
those live in ``docs/`` (where-it-ran.md, history.md) and in ``benchmarks/``.
"""

import json
import re
from pathlib import Path

import pytest

from slipcore_nb import registry
from slipcore_nb.artifacts import NOTEBOOKS

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def markdown(notebook: str) -> str:
    """The notebook's markdown cells, whitespace folded (the prose wraps anywhere)."""
    cells = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    return " ".join(" ".join("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")


def source(notebook: str) -> str:
    cells = json.loads((REPO / "notebooks" / f"{notebook}.ipynb").read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells)


@pytest.fixture(scope="module")
def reliability():
    """Per batch order: the default run's settings, its eval_unseen scores and 06's conversations."""
    return json.loads((RESULTS / "reliability.json").read_text())["orders"]


def _range(values) -> tuple[float, float]:
    values = list(values)
    assert values, "the result file holds no such number"
    return min(values), max(values)


def _about(quoted: int, low: float, high: float, slack: float) -> bool:
    """``about N`` is true of a measured range when N lies within it, give or take ``slack``."""
    return low - slack <= quoted <= high + slack


BF16_RUN = re.compile(r"On a 2-core bf16 CPU, (\d+) steps reach about (\d+) % protocol-correct on unseen wording "
                      r"after about (\d+) minutes of training \(README table\)", re.IGNORECASE)
BF16_RATE = re.compile(r"on a 2-core bf16 CPU the default run answers valid nSLIP almost always and about (\d+) % "
                       r"protocol-correct on unseen wording \(README table\)", re.IGNORECASE)
CLEAN = re.compile(r"with free decoding (\d+) of (\d+) conversations complete clean in 06 \(README table\)")


def test_every_expectation_on_a_bf16_cpu_is_one_the_checks_below_read():
    """A sentence about the 2-core bf16 CPU that no pattern here reads would go unchecked."""
    for notebook in NOTEBOOKS:
        text = markdown(notebook)
        mentions = len(re.findall(r"2-core bf16 CPU", text, re.IGNORECASE))
        assert mentions == len(BF16_RUN.findall(text)) + len(BF16_RATE.findall(text)), notebook
    assert BF16_RUN.search(markdown("03_train")) and BF16_RUN.search(markdown("01_load"))


def test_the_default_bf16_cpu_run_is_quoted_as_measured(reliability):
    protocol = _range(order["messages"]["eval_unseen"]["protocol_correct"] for order in reliability)
    valid = _range(order["messages"]["eval_unseen"]["valid"] for order in reliability)
    minutes = _range(order["settings"]["train_minutes"] for order in reliability if "train_minutes" in order["settings"])
    steps = {order["settings"]["max_steps"] for order in reliability if "max_steps" in order["settings"]}
    assert steps == {registry.get_spec("smollm2-135m").bf16_cpu_max_steps}, "the benchmark ran other than the default"
    for notebook in NOTEBOOKS:
        text = markdown(notebook)
        for quoted_steps, percent, quoted_minutes in BF16_RUN.findall(text):
            assert int(quoted_steps) in steps, (notebook, quoted_steps, steps)
            assert _about(int(percent), *protocol, slack=2.5), (notebook, percent, protocol)
            assert _about(int(quoted_minutes), *minutes, slack=max(1.0, 0.15 * minutes[1])), (notebook, quoted_minutes)
        for percent in BF16_RATE.findall(text):
            assert _about(int(percent), *protocol, slack=2.5) and valid[0] >= 95, (notebook, percent, protocol, valid)


def test_05_quotes_06s_clean_conversations_as_measured(reliability):
    clean = _range(order["conversations"]["free"]["completed_clean"] for order in reliability)
    total = {order["conversations"]["free"]["conversations"] for order in reliability}
    (quoted,) = CLEAN.findall(markdown("05_ollama_test"))
    assert _about(int(quoted[0]), *clean, slack=0) and {int(quoted[1])} == total, (quoted, clean, total)


def test_03_names_the_last_common_move_to_learn(reliability):
    """03: "Of the common moves, the executor's `report` ... is the last to learn" (10 or more examples)."""
    moves = reliability[0]["messages"]["eval_unseen"]["per_move"]
    common = [move for move, row in moves.items() if row["n"] >= 10]
    mean = {move: sum(o["messages"]["eval_unseen"]["per_move"][move]["protocol_correct"] for o in reliability)
            for move in common}
    named = re.search(r"Of the common moves, the executor's `(\w+)`", markdown("03_train")).group(1)
    assert min(mean, key=mean.get) == named, mean


def test_04_says_what_the_quantization_benchmark_recommends():
    result = json.loads((RESULTS / "quantization.json").read_text())
    text = markdown("04_export")
    assert re.search(r"`benchmarks/results/quantization\.json`\) recommends (\w+)", text).group(1) == result["recommended"]
    assert "still rarely right" in text and result["files"]["F16"]["protocol_correct"] < 50, "04 calls it rarely right"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_the_prose_quotes_no_dated_or_per_machine_run(notebook):
    text = source(notebook)
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "a date"
    assert not re.search(r"\b(Xeon|EPYC|Zen ?\d|Ryzen|Sapphire Rapids|Threadripper)\b", text), "a CPU model"
