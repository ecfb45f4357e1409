"""The finetune dataset: determinism, schema, held-out split, protocol consistency, validation errors."""

import collections
import json
import re
import subprocess
import sys

import pytest

from slipcore_nb.conversations import (
    CRITIC_TAG_BY_STATUS, PRIORITIES, ROLE_SPECS, ROLES, SCORE_BANDS, STATUS_CODES, all_goal_texts,
    incoming_message,
)
from slipcore_nb.dataset import (
    DATA_DIR, DatasetError, build_splits, load_or_build, load_split, read_jsonl, write_jsonl,
)
from slipcore_nb.protocol import Slot, decode, to_base62

GOAL_LINE = re.compile(r"^Goal\[([0-9A-Za-z]+)\]: (.+)$", re.M)


@pytest.fixture(scope="module")
def committed():
    return {name: load_split(name) for name in ("train", "eval")}


def test_committed_files_regenerate_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in ("train", "eval"):
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DATA_DIR / f"{name}.jsonl").read_bytes()


def test_cli_options(tmp_path):
    run = subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--num-conversations" in run.stdout and "--seed" in run.stdout
    subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--out", str(tmp_path),
                    "--num-conversations", "20", "--eval-conversations", "5", "--seed", "7"], check=True,
                   capture_output=True)
    assert len(read_jsonl(tmp_path / "train.jsonl")) == 60
    assert len(read_jsonl(tmp_path / "eval.jsonl")) == 20
    bad = subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--out", str(tmp_path),
                          "--num-conversations", "5", "--eval-conversations", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "eval_conversations" in bad.stderr


def test_sizes_and_roles(committed):
    assert len(committed["train"]) >= 3000 and len(committed["eval"]) >= 200
    for examples in committed.values():
        counts = collections.Counter(ex["role"] for ex in examples)
        assert set(counts) == set(ROLES) and len(set(counts.values())) == 1


def test_same_seed_same_data_other_seed_other_data():
    assert build_splits(30, 5, seed=1) == build_splits(30, 5, seed=1)
    assert build_splits(30, 5, seed=1) != build_splits(30, 5, seed=2)


def goal_texts(examples):
    return {GOAL_LINE.search(ex["input"]).group(2) for ex in examples}


def test_eval_goals_are_held_out(committed):
    assert goal_texts(committed["eval"]).isdisjoint(goal_texts(committed["train"]))


def test_goal_texts_are_diverse(committed):
    assert len(all_goal_texts()) >= 1000
    assert len(goal_texts(committed["train"])) >= 500


def test_ids_usually_differ_from_the_conversation_id(committed):
    messages = [decode(ex["target"]) for ex in committed["train"]]
    same = sum(m.slots[Slot.GOAL_ID] == m.conv or m.slots[Slot.TASK_ID] == m.conv for m in messages)
    assert same / len(messages) < 0.05


def test_every_target_follows_the_protocol_from_its_input(committed):
    for ex in committed["train"] + committed["eval"]:
        role, target = ex["role"], decode(ex["target"])
        spec = ROLE_SPECS[role]
        assert (target.act, target.frame, target.turn) == (spec.act, spec.frame, spec.turn)
        assert f"You are the {role} agent (id {to_base62(target.src)})" in ex["input"]
        goal_id = GOAL_LINE.search(ex["input"]).group(1)
        assert to_base62(target.slots[Slot.GOAL_ID]) == goal_id
        assert target.slots[Slot.TAG] in spec.tags
        incoming = incoming_message(ex["input"])
        if role == "coordinator":
            assert incoming is None
            assert f"c={to_base62(target.conv)} " in ex["input"]
            assert f"task k={to_base62(target.slots[Slot.TASK_ID])}." in ex["input"]
            assert target.slots[Slot.PRIORITY] in PRIORITIES
            continue
        assert target.conv == incoming.conv and target.turn == incoming.turn + 1
        assert target.slots[Slot.TASK_ID] == incoming.slots[Slot.TASK_ID]
        assert target.dst == (incoming.src if role == "planner" else incoming.dst)
        if role == "planner":
            assert target.dst != target.src
            assert target.slots[Slot.PRIORITY] == incoming.slots[Slot.PRIORITY]
        if role == "executor":
            assert f"R[{to_base62(target.slots[Slot.RESULT_ID])}]" in ex["input"]
            assert target.slots[Slot.STATUS] in STATUS_CODES.values()
        if role == "critic":
            status = incoming.slots[Slot.STATUS]
            assert target.slots[Slot.RESULT_ID] == incoming.slots[Slot.RESULT_ID]
            assert target.slots[Slot.SCORE] in SCORE_BANDS[status]
            assert target.slots[Slot.TAG] == CRITIC_TAG_BY_STATUS[status]


def test_write_then_read_round_trips(tmp_path):
    examples = build_splits(10, 2, seed=3)["eval"]
    write_jsonl(tmp_path / "x.jsonl", examples)
    assert read_jsonl(tmp_path / "x.jsonl") == examples


GOOD = {"role": "planner", "input": "hi", "target": '@a4|f1|c1|S1|d0|T2#'}


@pytest.mark.parametrize("bad_line, reason", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"role": "planner", "input": "hi"}), "missing field 'target'"),
    (json.dumps({**GOOD, "input": 5}), "field 'input' must be a string"),
    (json.dumps({**GOOD, "role": "janitor"}), "field 'role' is 'janitor'"),
    (json.dumps({**GOOD, "target": "@a4|f1"}), "field 'target' is not valid nSLIP (position 6: missing closing '#')"),
    ("", "not valid JSON"),
])
def test_read_reports_file_line_and_reason(tmp_path, bad_line, reason):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n" + bad_line + "\n" + "{worse\n")
    with pytest.raises(DatasetError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert reason in str(err.value)


def test_missing_split_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m slipcore_nb.dataset"):
        load_split("train", tmp_path)


def test_load_or_build_regenerates_missing_files(tmp_path, committed):
    assert load_or_build(tmp_path) == committed
    assert (tmp_path / "eval.jsonl").read_bytes() == (DATA_DIR / "eval.jsonl").read_bytes()
