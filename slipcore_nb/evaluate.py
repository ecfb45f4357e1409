"""Protocol-aware evaluation: greedy answers to eval prompts, scored field by field.

"Looks like nSLIP" is not enough: an answer must decode (``valid``), and then every field the
protocol determines must be what the conversation grammar (:mod:`slipcore_nb.conversations`) says
(``protocol_correct``): act and frame, conversation, turn, sender and addressee, and the ids it
copies or was given (goal, task, parent task, result, error code). ``rules`` checks the fields a rule
fixes from the input (status, the critic's score, priority, tag). ``valid_but_wrong`` counts answers that
decode but are protocol-incorrect: a grammar can turn a wrong, invalid answer into a wrong, valid one,
so it is shown next to every constrained run. Any runtime's outputs can be scored (PyTorch here,
llama.cpp or Ollama in :mod:`answering`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .conversations import MOVE_OF_TAG, ROLES
from .dataset import check_examples
from .prompts import PROMPT
from .protocol import NSlipError, Slot, decode, extract

ID_SLOTS = (Slot.GOAL_ID, Slot.TASK_ID, Slot.PARENT_TASK_ID, Slot.RESULT_ID, Slot.ERROR_CODE)
RULE_SLOTS = (Slot.STATUS, Slot.SCORE, Slot.PRIORITY, Slot.TAG)
CHECKS = ("valid", "exact", "act_frame", "turn", "conv", "src_dst", "ids", "rules", "protocol_correct",
          "valid_but_wrong")
DETERMINED = ("act_frame", "turn", "conv", "src_dst", "ids")


def clean_answer(raw: str, eos_token: str | None = None) -> str:
    """Cut a raw completion at the first stop sequence (as Ollama and llama.cpp do) and strip it."""
    if not isinstance(raw, str):
        raise TypeError(f"a raw completion must be a str, got {type(raw).__name__}")
    cut = len(raw)
    for stop in PROMPT.stop_sequences(eos_token):
        at = raw.find(stop)
        if at != -1:
            cut = min(cut, at)
    return raw[:cut].strip()


def score_answer(example: dict[str, str], answer: str) -> dict[str, bool]:
    """Field-by-field checks of one answer against the example's target (what the protocol determines)."""
    target = decode(example["target"])
    try:
        out = decode(answer)
    except NSlipError:
        return {check: False for check in CHECKS}
    scores = {
        "valid": True,
        "exact": answer == example["target"],
        "act_frame": (out.act, out.frame) == (target.act, target.frame),
        "turn": out.turn == target.turn,
        "conv": out.conv == target.conv,
        "src_dst": (out.src, out.dst) == (target.src, target.dst),
        "ids": all(out.slots.get(slot) == target.slots.get(slot) for slot in ID_SLOTS),
        "rules": all(out.slots.get(slot) == target.slots.get(slot) for slot in RULE_SLOTS),
    }
    scores["protocol_correct"] = all(scores[check] for check in DETERMINED)
    scores["valid_but_wrong"] = not scores["protocol_correct"]
    return scores


@dataclass
class EvalReport:
    """Per-example rows and the per-role/overall table of rates (in %)."""

    rows: list[dict]

    @property
    def table(self):
        import pandas as pd

        frame = pd.DataFrame(self.rows)
        groups = {role: frame[frame.role == role] for role in ROLES if (frame.role == role).any()}
        groups["overall"] = frame
        table = pd.DataFrame({name: {"n": len(g), **{c: 100.0 * g[c].mean() for c in CHECKS}}
                              for name, g in groups.items()}).T
        return table.astype({"n": int}).round(1)

    def by_move(self, check: str = "protocol_correct") -> dict[str, dict]:
        """``{move: {"n", check}}`` over the moves of :data:`~slipcore_nb.conversations.MOVES`, named by the
        target's tag: a role's rate hides which situation fails (the planner's REJECT, not its PROPOSE)."""
        groups: dict[str, list[bool]] = {}
        for row in self.rows:
            move = MOVE_OF_TAG.get(decode(row["target"]).slots.get(Slot.TAG), "other")
            groups.setdefault(move, []).append(row[check])
        return {move: {"n": len(hits), check: round(100.0 * sum(hits) / len(hits), 1)}
                for move, hits in groups.items()}

    def rate(self, check: str) -> float:
        """Overall rate of one check, in %."""
        return 100.0 * sum(row[check] for row in self.rows) / max(len(self.rows), 1)

    def summary(self) -> dict[str, float]:
        return {check: round(self.rate(check), 1) for check in CHECKS}


def score_outputs(examples: list[dict[str, str]], raw_outputs: list[str],
                  eos_token: str | None = None) -> EvalReport:
    """Score raw completions from any runtime (PyTorch, llama.cpp, Ollama)."""
    examples = check_examples(examples)
    if len(examples) != len(raw_outputs):
        raise ValueError(f"{len(examples)} examples but {len(raw_outputs)} outputs")
    rows = []
    for index, (ex, raw) in enumerate(zip(examples, raw_outputs)):
        if not isinstance(raw, str):
            raise TypeError(f"raw_outputs[{index}] must be a str, got {type(raw).__name__}")
        answer = clean_answer(raw, eos_token)
        found = extract(answer)
        rows.append({"role": ex["role"], "answer": answer, "target": ex["target"],
                     "contains_message": found is not None, **score_answer(ex, answer)})
    return EvalReport(rows)


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 16,
             progress: bool = False) -> list[str]:
    """Greedy completions (new text only) for ready-made prompts, in batches, left-padded."""
    import torch

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # decoder-only: pad on the left
    from .loading import compute_device

    device = compute_device(model)
    batches = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in batches:
                enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True).to(device)
                generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                           use_cache=True, pad_token_id=tokenizer.pad_token_id,
                                           eos_token_id=tokenizer.eos_token_id)
                new_tokens = generated[:, enc["input_ids"].shape[1]:]
                # No clean-up: it strips spaces before punctuation, which BPE tokenizers must keep.
                outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True,
                                                      clean_up_tokenization_spaces=False))
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side  # the trainer shares this tokenizer
    return outputs


def answer_budget(tokenizer, examples: list[dict[str, str]], margin: int = 8) -> int:
    """Enough new tokens for the longest target plus its EOS and a margin; prose gets cut there."""
    if not examples:
        raise ValueError("answer_budget needs at least one example (is an eval limit 0, or the split empty?)")
    longest = max(len(tokenizer(ex["target"], add_special_tokens=False)["input_ids"]) for ex in examples)
    return longest + margin


def evaluate(model, tokenizer, examples: list[dict[str, str]], max_new_tokens: int | None = None,
             batch_size: int = 16, progress: bool = False) -> EvalReport:
    """Generate greedy answers for the examples' prompts and score them."""
    prompts = [PROMPT.prompt(ex["input"]) for ex in examples]
    max_new_tokens = max_new_tokens or answer_budget(tokenizer, examples)
    raw = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   progress=progress)
    return score_outputs(examples, raw, tokenizer.eos_token)
