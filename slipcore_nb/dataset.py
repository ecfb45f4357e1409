"""The finetune dataset: build the three splits, write and read validated JSONL.

Each example is ``{"role", "input", "target"}``, the guide's format. Two held-out splits:

- ``eval``: goals that never occur in ``train``, worded with the training phrasings;
- ``eval_unseen``: goals that never occur in ``train`` **and** wording that never occurs there (every
  phrase comes from the ``unseen`` pools of :mod:`slipcore_nb.instructions`). This is the headline number:
  it says whether the model learned the protocol or our templates.
- ``eval_served``: the same exchanges as ``eval_unseen``, in the short form served agents use
  (:func:`~slipcore_nb.instructions.served_instruction`; a share of ``train`` is in that form too), so a
  serving benchmark can compare the two forms on the same messages.
- ``eval_guide``: the guide's one-line style (``You are a planner agent. Goal[1]: Add rate limiting.
  Respond with nSLIP.`` and its siblings for every role and move,
  :func:`~slipcore_nb.instructions.guide_instruction`), on goals no other split uses; its first row is
  the guide's own prompt. No training example is worded this way.

Run ``python -m slipcore_nb.dataset --out data/finetune`` to regenerate the committed files; with
the default arguments the output is byte-for-byte what is in the repository.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from . import whole_files
from .arguments import count, out_folder
from .conversations import GUIDE_ANSWER, GUIDE_PROMPT, ROLES, all_goal_texts, conversation
from .instructions import guide_instruction, instruction, served_instruction
from .protocol import NSlipError, decode, encode

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "finetune"
FIELDS = ("role", "input", "target")
SPLITS = ("train", "eval", "eval_unseen", "eval_served", "eval_guide")
HEADLINE_SPLIT = "eval_unseen"
DEFAULT_SEED = 42
DEFAULT_CONVERSATIONS = 760
DEFAULT_EVAL_CONVERSATIONS = 32
SERVED_SHARE = 0.2  # of training examples in the served form: enough to learn it, most stay long wordings
# Situations the conversations seldom reach (1-5 % of train each), worded this many more times in train
# only; the held-out splits keep the conversations' own mix. At the natural mix SmolLM2 after 300 steps
# answered them with the common move's act (INFORM for an ERROR, PROPOSE for an ASK or a REJECT), and a
# planner given only a goal (the guide's prompt) with the coordinator's opening REQUEST.
EXTRA_WORDINGS = {"plan_alone": 2, "ask": 2, "decline": 3, "commit": 3, "answer": 1, "accept": 3, "busy": 3,
                  "error": 1, "retry": 1}


class DatasetError(ValueError):
    """A JSONL file that is not a valid dataset; the message names ``file:line`` and the reason."""


def build_splits(
    num_conversations: int = DEFAULT_CONVERSATIONS,
    eval_conversations: int = DEFAULT_EVAL_CONVERSATIONS,
    seed: int = DEFAULT_SEED,
) -> dict[str, list[dict[str, str]]]:
    """Deterministic splits; each conversation has its own goal, ``eval_conversations`` for each held-out split."""
    for name, value in (("num_conversations", num_conversations), ("eval_conversations", eval_conversations),
                        ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"build_splits: {name} must be an int, got {value!r}")
    if not 0 < 2 * eval_conversations < num_conversations:
        raise ValueError(f"need 0 < 2 * eval_conversations ({eval_conversations}) < num_conversations "
                         f"({num_conversations}): each held-out split takes eval_conversations")
    if num_conversations + eval_conversations > len(all_goal_texts()):
        raise ValueError(f"num_conversations + eval_conversations ({num_conversations} + {eval_conversations}) is at "
                         f"most {len(all_goal_texts())}: one distinct goal text each, eval_guide's included")
    goals_of = _split_goals(random.Random(seed), num_conversations, eval_conversations)
    splits: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for name in ("train", "eval", "eval_unseen"):
        # Each split draws from its own stream: a new training phrasing changes train and eval (worded
        # from the same pools) and leaves the unseen-wording split, the headline, as it was.
        rng = random.Random(f"{seed}:{name}")
        for goal in goals_of[name]:
            for exchange in conversation(rng, goal):
                target = encode(exchange.target)
                if name == "train" and rng.random() < SERVED_SHARE:
                    text = served_instruction(exchange)
                else:
                    text = instruction(exchange, rng, unseen=name == "eval_unseen")
                splits[name].append({"role": exchange.role, "input": text, "target": target})
                if name == "train":
                    splits[name].extend({"role": exchange.role, "input": instruction(exchange, rng), "target": target}
                                        for _ in range(EXTRA_WORDINGS.get(situation(exchange), 0)))
                if name == "eval_unseen":
                    splits["eval_served"].append({"role": exchange.role, "input": served_instruction(exchange),
                                                  "target": target})
        if name == "train":
            rng.shuffle(splits["train"])  # roles interleaved, so any prefix of train is a fair sample
    splits["eval_guide"] = guide_split(seed, num_conversations, eval_conversations)
    return splits


def guide_split(seed: int, num_conversations: int, eval_conversations: int) -> list[dict[str, str]]:
    """The guide's prompt, then ``eval_conversations`` conversations in its style, on goals no other split
    draws (its own random stream, so the other splits stay as they were)."""
    rng = random.Random(f"{seed}:eval_guide")
    goals = _guide_goals(rng, _split_goals(random.Random(seed), num_conversations, eval_conversations),
                         eval_conversations)
    rows = [{"role": "planner", "input": GUIDE_PROMPT, "target": GUIDE_ANSWER}]
    for goal in goals:
        rows += [{"role": exchange.role, "input": guide_instruction(exchange, rng), "target": encode(exchange.target)}
                 for exchange in conversation(rng, goal)]
    return rows


def situation(exchange) -> str:
    """The exchange's move, with a planner that got a goal and no message (the guide's case) set apart."""
    return "plan_alone" if exchange.move == "plan" and exchange.incoming is None else exchange.move


def _split_goals(rng: random.Random, num_conversations: int, eval_conversations: int) -> dict[str, list[str]]:
    """The goal texts of each split, drawn first from the dataset's random stream."""
    goals = all_goal_texts()
    if num_conversations > len(goals):
        raise ValueError(f"num_conversations is at most {len(goals)} (one distinct goal text each)")
    chosen = rng.sample(goals, num_conversations)
    return {"train": chosen[2 * eval_conversations:], "eval": chosen[:eval_conversations],
            "eval_unseen": chosen[eval_conversations:2 * eval_conversations]}


def _guide_goals(rng: random.Random, taken: dict[str, list[str]], count: int) -> list[str]:
    """``count`` goal texts that no split of ``taken`` uses."""
    used = {goal for goals in taken.values() for goal in goals}
    return rng.sample([goal for goal in all_goal_texts() if goal not in used], count)


def held_out_goals(split: str = HEADLINE_SPLIT) -> list[str]:
    """The committed dataset's goal texts of a held-out split: goals no training example mentions."""
    if split not in SPLITS or split == "train":
        raise ValueError(f"held_out_goals is for the held-out splits {SPLITS[1:]}, got {split!r}")
    goals = _split_goals(random.Random(DEFAULT_SEED), DEFAULT_CONVERSATIONS, DEFAULT_EVAL_CONVERSATIONS)
    if split == "eval_guide":
        return _guide_goals(random.Random(f"{DEFAULT_SEED}:eval_guide"), goals, DEFAULT_EVAL_CONVERSATIONS)
    return goals["eval_unseen" if split == "eval_served" else split]


def check_example(example, where: str) -> dict[str, str]:
    """``example`` as the dataset holds it, or :class:`DatasetError` naming ``where`` and the field: exactly
    the fields :data:`FIELDS` (nothing dropped silently), each a string, a known role, a non-blank input
    and a target that :func:`~slipcore_nb.protocol.decode` reads. The one check every reader and writer uses."""
    if not isinstance(example, dict):
        raise DatasetError(f"{where}: expected a JSON object (a dict), got {type(example).__name__}")
    for key in FIELDS:
        if key not in example:
            raise DatasetError(f"{where}: missing field '{key}' (an example has {', '.join(FIELDS)})")
        if not isinstance(example[key], str):
            raise DatasetError(f"{where}: field '{key}' must be a string, got {type(example[key]).__name__}")
    extra = [key for key in example if key not in FIELDS]
    if extra:
        raise DatasetError(f"{where}: unknown field {extra[0]!r} (an example has only {', '.join(FIELDS)})")
    if example["role"] not in ROLES:
        raise DatasetError(f"{where}: field 'role' is {example['role']!r}, expected one of {ROLES}")
    if not example["input"].strip():
        raise DatasetError(f"{where}: field 'input' is blank (the instruction the model answers)")
    try:
        decode(example["target"])
    except NSlipError as err:
        raise DatasetError(f"{where}: field 'target' is not valid nSLIP ({err})") from None
    return {key: example[key] for key in FIELDS}


def check_examples(examples, where: str = "") -> list[dict[str, str]]:
    """A list of rows as the dataset holds them: not empty, each through :func:`check_example` as
    ``examples[N]`` (after ``where``, the file being written, where there is one). The one check of a
    list of rows, for the writer, a training run and scoring."""
    prefix = f"{where}: " if where else ""
    if isinstance(examples, (str, bytes, dict)) or not hasattr(examples, "__iter__"):
        raise TypeError(f"{prefix}examples must be a list of dataset rows, got {type(examples).__name__}")
    rows = [check_example(example, f"{prefix}examples[{index}]") for index, example in enumerate(examples)]
    if not rows:
        raise DatasetError(f"{prefix}no examples (a split, a run and a score each need at least one)")
    return rows


def write_jsonl(path: str | Path, examples: list[dict[str, str]]) -> None:
    """Every example validated as :func:`read_jsonl` would read it back, then the file written whole
    (a refused example or a failed write leaves the file that was there)."""
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in check_examples(examples, str(path))]
    try:
        whole_files.write_text(path, "".join(lines))
    except UnicodeEncodeError as err:
        raise DatasetError(f"{path}: text that UTF-8 cannot hold ({err.reason} at character {err.start})") from None


def read_jsonl(path: str | Path) -> list[dict[str, str]]:
    """Read and validate every line; the first bad line raises :class:`DatasetError` with file:line."""
    path = Path(path)
    examples = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DatasetError(f"{path}:{lineno}: not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})"
                                   ) from None
            examples.append(_validated(line, f"{path}:{lineno}"))
    if not examples:
        raise DatasetError(f"{path}: no examples (an empty file)")
    return examples


def _no_repeats(pairs: list[tuple[str, object]]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DatasetError(f"field {key!r} given twice")
        seen[key] = value
    return seen


def _validated(line: str, where: str) -> dict[str, str]:
    if not line.strip():
        raise DatasetError(f"{where}: not valid JSON (an empty line; one JSON object per line, no blank lines)")
    try:
        record = json.loads(line, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    except DatasetError as err:
        raise DatasetError(f"{where}: {err}") from None
    return check_example(record, where)


def load_split(name: str, data_dir: str | Path | None = None) -> list[dict[str, str]]:
    """One of :data:`SPLITS` from ``data_dir`` (default: the committed data/finetune)."""
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    path = Path(data_dir or DATA_DIR) / f"{name}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m slipcore_nb.dataset --out {path.parent}`")
    return read_jsonl(path)


def load_or_build(data_dir: str | Path | None = None) -> dict[str, list[dict[str, str]]]:
    """Every split from ``data_dir``; a missing split file is generated there with the default arguments.

    Files that exist are read, never rewritten: a user's own ``train.jsonl`` stays theirs.
    """
    data_dir = Path(data_dir or DATA_DIR)
    if data_dir.exists() and not data_dir.is_dir():
        raise NotADirectoryError(f"data_dir {str(data_dir)!r} is a file, not the folder of the split files")
    missing = [name for name in SPLITS if not (data_dir / f"{name}.jsonl").exists()]
    if missing:
        built = build_splits()
        for name in missing:
            write_jsonl(data_dir / f"{name}.jsonl", built[name])
        print(f"generated {', '.join(f'{name}.jsonl' for name in missing)} in {data_dir} (the default dataset)")
    return {name: load_split(name, data_dir) for name in SPLITS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m slipcore_nb.dataset",
        description="Generate the nSLIP finetune dataset (train, eval, eval_unseen and eval_served .jsonl).",
    )
    parser.add_argument("--out", type=out_folder, default=DATA_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--num-conversations", type=count(3), default=DEFAULT_CONVERSATIONS,
                        help="conversations in total, one goal each (default: %(default)s)")
    parser.add_argument("--eval-conversations", type=count(1), default=DEFAULT_EVAL_CONVERSATIONS,
                        help="of those, held out for eval.jsonl and again for eval_unseen.jsonl (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        splits = build_splits(args.num_conversations, args.eval_conversations, args.seed)
    except ValueError as err:
        parser.error(f"argument --num-conversations/--eval-conversations: {err}")
    for name, examples in splits.items():
        path = args.out / f"{name}.jsonl"
        write_jsonl(path, examples)
        print(f"wrote {len(examples)} examples to {path}")


if __name__ == "__main__":
    main()
