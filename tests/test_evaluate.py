"""Protocol-aware scoring of hand-made right and wrong answers."""

import pytest

from slipcore_nb.dataset import load_split
from slipcore_nb.evaluate import CHECKS, clean_answer, score_answer, score_outputs
from slipcore_nb.protocol import Slot, decode, encode


@pytest.fixture(scope="module")
def by_role():
    examples = load_split("eval")
    return {role: next(ex for ex in examples if ex["role"] == role)
            for role in ("coordinator", "planner", "executor", "critic")}


def mutate(example, **changes):
    msg = decode(example["target"])
    for key, value in changes.items():
        if key in ("conv", "turn", "src", "dst", "act", "frame"):
            setattr(msg, key, value)
        elif value is None:
            msg.slots.pop(Slot[key])
        else:
            msg.slots[Slot[key]] = value
    return encode(msg)


def test_the_target_scores_everything_right(by_role):
    for ex in by_role.values():
        scores = score_answer(ex, ex["target"])
        assert not scores.pop("valid_but_wrong") and all(scores.values()), ex["role"]


def test_prose_scores_nothing(by_role):
    scores = score_answer(by_role["planner"], "Sure, I will plan the rate limiting.")
    assert not any(scores.values())


@pytest.mark.parametrize("role, change, failed", [
    ("planner", {"turn": 1}, "turn"),
    ("planner", {"act": 3}, "act_frame"),
    ("critic", {"frame": 2}, "act_frame"),
    ("executor", {"conv": 0}, "conv"),
    ("planner", {"GOAL_ID": 0}, "ids"),
    ("critic", {"RESULT_ID": 0}, "ids"),
    ("executor", {"PARENT_TASK_ID": None}, "ids"),
    ("coordinator", {"TASK_ID": 9999}, "ids"),
    ("planner", {"dst": 99}, "src_dst"),
])
def test_a_wrong_determined_field_fails_its_check_and_protocol_correct(by_role, role, change, failed):
    scores = score_answer(by_role[role], mutate(by_role[role], **change))
    assert scores["valid"] and not scores["exact"]
    assert not scores[failed] and not scores["protocol_correct"] and scores["valid_but_wrong"]
    assert all(scores[c] for c in CHECKS if c not in (failed, "exact", "protocol_correct", "valid_but_wrong"))


@pytest.mark.parametrize("role, change", [
    ("planner", {"TAG": "plan_v9"}),
    ("coordinator", {"PRIORITY": 7}),
    ("critic", {"SCORE": 61}),
    ("critic", {"TAG": "eval_maybe"}),
])
def test_a_wrong_rule_field_fails_rules_only(by_role, role, change):
    scores = score_answer(by_role[role], mutate(by_role[role], **change))
    assert scores["protocol_correct"] and not scores["valid_but_wrong"] and not scores["rules"]


def test_status_as_the_spec_string(by_role):
    report = next(ex for ex in load_split("eval") if decode(ex["target"]).slots.get(Slot.STATUS))
    status = decode(report["target"]).slots[Slot.STATUS]
    assert status in ("done", "partial", "failed") and f'u"{status}"' in report["target"]
    assert not score_answer(report, mutate(report, STATUS=1))["rules"]


def test_clean_answer_cuts_at_stops():
    assert clean_answer(" @a4|f1|c1|S1|d0|T2#</s>junk", "</s>") == "@a4|f1|c1|S1|d0|T2#"
    assert clean_answer("@a4|f1|c1|S1|d0|T2#\n### Instruction:") == "@a4|f1|c1|S1|d0|T2#"


def test_report_table_per_role_and_overall(by_role):
    examples = list(by_role.values())
    outputs = [ex["target"] for ex in examples[:3]] + ["no idea"]
    report = score_outputs(examples, outputs)
    table = report.table
    assert list(table.index) == ["coordinator", "planner", "executor", "critic", "overall"]
    assert table.loc["overall", "valid"] == 75.0 and table.loc["critic", "valid"] == 0.0
    assert report.summary()["protocol_correct"] == 75.0
    with pytest.raises(ValueError):
        score_outputs(examples, outputs[:2])


def test_report_per_move_names_the_situation_of_each_target():
    examples = [ex for ex in load_split("eval") if decode(ex["target"]).slots[Slot.TAG] in ("plan_v1", "busy")][:40]
    outputs = [ex["target"] if decode(ex["target"]).slots[Slot.TAG] == "plan_v1" else "no idea" for ex in examples]
    by_move = score_outputs(examples, outputs).by_move()
    assert set(by_move) == {"plan", "busy"}, by_move
    assert by_move["plan"]["protocol_correct"] == 100.0 and by_move["busy"]["protocol_correct"] == 0.0
    assert sum(group["n"] for group in by_move.values()) == len(examples)


def test_every_tag_names_one_move():
    from slipcore_nb.conversations import MOVE_OF_TAG, MOVES

    assert len(MOVE_OF_TAG) == sum(len(move.tags) for move in MOVES.values())


def test_generate_leaves_the_shared_tokenizer_as_it_found_it():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slipcore_nb.evaluate import generate
    from slipcore_nb.tiny import build_tiny

    folder = build_tiny()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "right"
    outputs = generate(AutoModelForCausalLM.from_pretrained(folder), tokenizer, ["a", "longer prompt"],
                       max_new_tokens=2)
    assert len(outputs) == 2 and tokenizer.padding_side == "right"
