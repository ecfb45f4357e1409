"""The finetune dataset: determinism, schema, held-out goals and wording, the conversation grammar, errors."""

import collections
import json
import re
import subprocess
import sys

import pytest

from slipcore_nb.conversations import (
    CRITIC_RULE, DEFAULT_IDS, GUIDE_ANSWER, GUIDE_GOAL, GUIDE_PROMPT, MOVES, ROLES, all_goal_texts, grammar_table,
)
from slipcore_nb.dataset import (
    DATA_DIR, SPLITS, DatasetError, build_splits, held_out_goals, load_or_build, load_split, read_jsonl, write_jsonl,
)
from slipcore_nb.instructions import ASKS, GOALS, INCOMING, INTROS, INTROS_NO_ID, PREAMBLES
from slipcore_nb.protocol import Act, Frame, Slot, decode, extract, to_base62



@pytest.fixture(scope="module")
def committed():
    return {name: load_split(name) for name in SPLITS}


def test_committed_files_regenerate_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in SPLITS:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (DATA_DIR / f"{name}.jsonl").read_bytes()


def test_cli_options(tmp_path):
    run = subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--num-conversations" in run.stdout and "--seed" in run.stdout
    subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--out", str(tmp_path),
                    "--num-conversations", "20", "--eval-conversations", "5", "--seed", "7"], check=True,
                   capture_output=True)
    assert read_jsonl(tmp_path / "train.jsonl") == build_splits(20, 5, seed=7)["train"]
    assert read_jsonl(tmp_path / "eval_unseen.jsonl") == build_splits(20, 5, seed=7)["eval_unseen"]
    bad = subprocess.run([sys.executable, "-m", "slipcore_nb.dataset", "--out", str(tmp_path),
                          "--num-conversations", "9", "--eval-conversations", "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "eval_conversations" in bad.stderr


def test_a_new_training_phrasing_leaves_the_unseen_split_as_it_was(monkeypatch):
    from slipcore_nb import instructions

    before = build_splits(100, 8)
    busy = instructions.FACTS["busy"]
    monkeypatch.setitem(instructions.FACTS, "busy", instructions.Pool(busy.train + ("Say no, you are swamped.",),
                                                                    busy.unseen))
    after = build_splits(100, 8)
    assert after["eval_unseen"] == before["eval_unseen"] and after["eval_served"] == before["eval_served"]
    assert after["train"] != before["train"]


def test_rare_situations_are_worded_more_often_in_train_only(monkeypatch, committed):
    """Extra wordings raise the share of rare moves in train; the held-out splits keep the conversations' mix."""
    from slipcore_nb import dataset

    natural = collections.Counter(decode(ex["target"]).slots[Slot.TAG] for ex in committed["eval_unseen"])
    trained = collections.Counter(decode(ex["target"]).slots[Slot.TAG] for ex in committed["train"])
    for tag in ("busy", "accepted", "committed", "declined", "need_info"):
        share_train = trained[tag] / len(committed["train"])
        assert share_train >= 0.03 and share_train > 1.5 * natural[tag] / len(committed["eval_unseen"]), tag
    before = build_splits(100, 8)
    monkeypatch.setattr(dataset, "EXTRA_WORDINGS", {})
    plain = build_splits(100, 8)
    assert {n: before[n] for n in SPLITS if n != "train"} == {n: plain[n] for n in SPLITS if n != "train"}
    assert len(before["train"]) > len(plain["train"])


def test_sizes_roles_acts_and_frames(committed):
    assert len(committed["train"]) >= 3000 and min(len(committed[n]) for n in ("eval", "eval_unseen")) >= 150
    for examples in committed.values():
        assert set(collections.Counter(ex["role"] for ex in examples)) == set(ROLES)
    messages = [decode(ex["target"]) for ex in committed["train"]]
    assert len({m.act for m in messages}) >= 8
    assert {m.frame for m in messages} == set(Frame)
    assert {Slot.PARENT_TASK_ID, Slot.ERROR_CODE, Slot.STATUS} <= {slot for m in messages for slot in m.slots}


def test_same_seed_same_data_other_seed_other_data():
    assert build_splits(30, 5, seed=1) == build_splits(30, 5, seed=1)
    assert build_splits(30, 5, seed=1) != build_splits(30, 5, seed=2)


GOAL_TEXT = re.compile("|".join(map(re.escape, sorted(all_goal_texts(), key=len, reverse=True))))


def goal_texts(examples):
    """The goal texts the examples' instructions hold (the longest in each; the served form names none)."""
    return {found.group(0) for ex in examples if (found := GOAL_TEXT.search(ex["input"]))}


def test_held_out_goals(committed):
    train = goal_texts(committed["train"])
    assert len(train) >= 500
    for name in ("eval", "eval_unseen"):
        assert goal_texts(committed[name]) and goal_texts(committed[name]).isdisjoint(train)
        assert set(held_out_goals(name)) == goal_texts(committed[name])  # what 06's agents work on
    assert held_out_goals("eval_served") == held_out_goals("eval_unseen")
    with pytest.raises(ValueError, match="held-out splits"):
        held_out_goals("train")


def test_unseen_split_uses_no_training_wording(committed):
    """Every phrase of an eval_unseen instruction comes from the held-out pools (ids and goals aside)."""
    pools = (PREAMBLES, INTROS, INTROS_NO_ID, INCOMING, GOALS, ASKS)
    def skeleton(phrase):  # the fixed words of a phrasing, e.g. "You are the ", " agent (id ", ")."
        return [part for part in re.split(r"\{[a-zA-Z_]+\}", phrase) if len(part.strip()) > 3]
    seen = {part for pool in pools for phrase in pool.train for part in skeleton(phrase)}
    unseen_only = {part for pool in pools for phrase in pool.unseen for part in skeleton(phrase)} - seen
    train_text = "\n".join(ex["input"] for ex in committed["train"])
    assert unseen_only and not any(part in train_text for part in unseen_only)
    for ex in committed["eval_unseen"]:
        assert any(part in ex["input"] for part in unseen_only), ex["input"]


SERVED = re.compile(r"(coordinator|planner|executor|critic) [0-9A-Z] (g=[0-9A-Za-z]+|in=@[^#]*#)( .+)?")


def test_served_form_says_the_same_exchanges_in_fewer_words(committed):
    """eval_served is eval_unseen, message for message, in the short form; a share of train is in it too."""
    unseen, served = committed["eval_unseen"], committed["eval_served"]
    assert [(ex["role"], ex["target"]) for ex in served] == [(ex["role"], ex["target"]) for ex in unseen]
    assert all(SERVED.fullmatch(ex["input"]) for ex in served)
    assert not goal_texts(served)  # goals travel as ids
    assert sum(len(ex["input"]) for ex in served) < 0.5 * sum(len(ex["input"]) for ex in unseen)
    # A fifth of the conversations' exchanges; the extra wordings of rare situations are all long form.
    share = sum(bool(SERVED.fullmatch(ex["input"])) for ex in committed["train"]) / len(committed["train"])
    assert 0.12 < share < 0.2
    for ex in served:  # the facts a long wording states are in the short form too
        incoming = extract(ex["input"])
        target = decode(ex["target"])
        if incoming is not None and target.dst not in (incoming.src, incoming.dst):  # dispatch, retry
            assert f"executor={to_base62(target.dst)}" in ex["input"]
        for slot, key in ((Slot.STATUS, "u"), (Slot.ERROR_CODE, "e")):
            if slot in target.slots and (incoming is None or slot not in incoming.slots):
                assert f"{key}={target.slots[slot]}" in ex["input"]


def test_the_guides_prompt_is_not_trained_on_but_its_style_is(committed):
    guide = GUIDE_PROMPT
    assert guide == "You are a planner agent. Goal[1]: Add rate limiting. Respond with nSLIP."  # word for word
    assert decode(GUIDE_ANSWER).act == Act.PROPOSE and decode(GUIDE_ANSWER).frame == Frame.PLAN
    assert GUIDE_GOAL not in all_goal_texts()
    assert not any(ex["input"] == guide for ex in committed["train"])
    styled = [ex for ex in committed["train"] if ex["role"] == "planner" and extract(ex["input"]) is None]
    assert len(styled) >= 100
    for ex in styled:
        target = decode(ex["target"])
        assert (target.act, target.frame, target.conv, target.dst, target.turn) == (
            Act.PROPOSE, Frame.PLAN, 1, DEFAULT_IDS["coordinator"], 2)


def test_ids_usually_differ_from_the_conversation_id(committed):
    messages = [decode(ex["target"]) for ex in committed["train"]]
    same = sum(m.slots[Slot.GOAL_ID] == m.conv != 1 or m.slots.get(Slot.TASK_ID) == m.conv != 1 for m in messages)
    assert same / len(messages) < 0.05


def move_of(target):
    """The move a target makes, read back from its act, frame and tag."""
    tag = target.slots[Slot.TAG]
    found = [name for name, move in MOVES.items()
             if (move.act, move.frame) == (target.act, target.frame) and tag in move.tags]
    assert len(found) == 1, (target, found)
    return found[0]


def test_every_target_follows_the_conversation_grammar(committed):
    """Each answer is what the grammar in docs/dataset.md says, given only what its instruction shows."""
    for ex in [ex for split in committed.values() for ex in split]:
        target, incoming = decode(ex["target"]), extract(ex["input"])
        move = MOVES[move_of(target)]
        assert move.role == ex["role"]
        assert f"{to_base62(target.slots[Slot.GOAL_ID])}" in ex["input"]
        if incoming is None:
            assert move_of(target) in ("open", "plan") and target.turn == (1 if move.role == "coordinator" else 2)
            continue
        assert (incoming.act, incoming.frame) in move.answers
        assert (target.conv, target.turn) == (incoming.conv, incoming.turn + 1)
        for slot in (Slot.GOAL_ID, Slot.TASK_ID, Slot.PARENT_TASK_ID):
            if move_of(target) != "dispatch":
                assert target.slots.get(slot) == incoming.slots.get(slot)
        if move_of(target) == "evaluate":
            assert target.dst == incoming.dst
            outcome = incoming.slots.get(Slot.STATUS, "error")
            assert (target.slots[Slot.SCORE], target.slots[Slot.TAG]) == CRITIC_RULE[outcome]
            assert target.slots.get(Slot.RESULT_ID) == incoming.slots.get(Slot.RESULT_ID)
        elif move_of(target) in ("dispatch", "retry"):
            assert target.src == incoming.dst and target.dst != incoming.src
        else:
            assert (target.src, target.dst) == (incoming.dst, incoming.src), "a reply goes back to the sender"
        if move_of(target) == "dispatch":
            assert target.slots[Slot.PARENT_TASK_ID] == incoming.slots[Slot.TASK_ID]
        if move_of(target) == "report":
            assert target.slots[Slot.STATUS] in ("done", "partial", "failed")
            assert f"{to_base62(target.slots[Slot.RESULT_ID])}" in ex["input"]
        if move_of(target) == "error":
            assert target.slots[Slot.ERROR_CODE] in ex["input"]


def test_write_then_read_round_trips(tmp_path):
    examples = build_splits(12, 2, seed=3)["eval"]
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
    assert (tmp_path / "eval_unseen.jsonl").read_bytes() == (DATA_DIR / "eval_unseen.jsonl").read_bytes()


def test_load_or_build_keeps_a_users_own_split_and_adds_only_what_is_missing(tmp_path, committed):
    mine = [dict(GOOD)]
    write_jsonl(tmp_path / "train.jsonl", mine)
    before = (tmp_path / "train.jsonl").read_bytes()
    splits = load_or_build(tmp_path)
    assert (tmp_path / "train.jsonl").read_bytes() == before and splits["train"] == mine
    assert {name: splits[name] for name in SPLITS if name != "train"} == {
        name: committed[name] for name in SPLITS if name != "train"}


def test_the_guide_style_split_is_held_out_and_opens_with_the_guides_prompt(committed):
    guide = committed["eval_guide"]
    assert guide[0] == {"role": "planner", "input": GUIDE_PROMPT, "target": GUIDE_ANSWER}
    assert {row["role"] for row in guide} == set(ROLES) and len(guide) > 150
    assert all(row["input"].startswith("You are ") and row["input"].endswith(" Respond with nSLIP.") for row in guide)
    train_text = "\n".join(row["input"] for row in committed["train"])
    goals = held_out_goals("eval_guide")
    assert not any(goal in train_text for goal in goals)
    assert not set(goals) & (set(held_out_goals("eval")) | set(held_out_goals("eval_unseen")))
    assert {row["input"] for row in guide}.isdisjoint(row["input"] for row in committed["train"])
    assert any("Incoming: @" in row["input"] for row in guide if row["role"] == "executor")


def test_the_dataset_page_documents_the_conversation_grammar():
    page = (DATA_DIR.parent.parent / "docs" / "dataset.md").read_text()
    assert grammar_table() in page
    assert all(f"| {move.act.name}/{move.frame.name} |" in grammar_table() for move in MOVES.values())
