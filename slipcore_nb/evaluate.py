"""Protocol-aware evaluation: greedy answers to eval prompts, scored field by field.

"Looks like nSLIP" is not enough: an answer must decode (``valid``), and then every field the
protocol determines must be right for the role and the incoming message (``protocol_correct``):
act and frame for the role, turn = incoming turn + 1, conv/goal/task/result ids copied, src/dst
right. Free fields (tag, priority, status, score) must stay inside the dataset's vocabulary.
Any runtime's outputs can be scored (PyTorch here, llama.cpp or Ollama in :mod:`serve`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .conversations import PRIORITIES, ROLE_SPECS, ROLES, SCORE_BANDS, STATUS_CODES, incoming_message
from .prompts import PROMPT
from .protocol import Message, NSlipError, Slot, decode, extract

ID_SLOTS = (Slot.GOAL_ID, Slot.TASK_ID, Slot.RESULT_ID)
CHECKS = ("valid", "exact", "act_frame", "turn", "conv", "ids", "src_dst", "slots", "free_ok",
          "protocol_correct")


def clean_answer(raw: str, eos_token: str | None = None) -> str:
    """Cut a raw completion at the first stop sequence (as Ollama and llama.cpp do) and strip it."""
    cut = len(raw)
    for stop in PROMPT.stop_sequences(eos_token):
        at = raw.find(stop)
        if at != -1:
            cut = min(cut, at)
    return raw[:cut].strip()


def score_answer(example: dict[str, str], answer: str) -> dict[str, bool]:
    """Field-by-field checks of one answer against the example's role, incoming message and target."""
    target = decode(example["target"])
    try:
        out = decode(answer)
    except NSlipError:
        return {check: False for check in CHECKS}
    spec = ROLE_SPECS[example["role"]]
    incoming = incoming_message(example["input"])
    scores = {
        "valid": True,
        "exact": answer == example["target"],
        "act_frame": (out.act, out.frame) == (spec.act, spec.frame),
        "turn": out.turn == (incoming.turn + 1 if incoming else spec.turn),
        "conv": out.conv == target.conv,
        "ids": all(out.slots.get(slot) == target.slots.get(slot) for slot in ID_SLOTS),
        "src_dst": (out.src, out.dst) == (target.src, target.dst),
        "slots": set(out.slots) == set(target.slots),
        "free_ok": free_fields_ok(example["role"], out, incoming),
    }
    determined = ("act_frame", "turn", "conv", "ids", "src_dst")
    scores["protocol_correct"] = all(scores[check] for check in determined)
    return scores


def free_fields_ok(role: str, out: Message, incoming: Message | None) -> bool:
    """Tag, priority, status and score, where present, inside the vocabulary the dataset documents."""
    slots = out.slots
    if Slot.TAG in slots and slots[Slot.TAG] not in ROLE_SPECS[role].tags:
        return False
    if Slot.PRIORITY in slots and slots[Slot.PRIORITY] not in PRIORITIES:
        return False
    if Slot.STATUS in slots and slots[Slot.STATUS] not in STATUS_CODES.values():
        return False
    if Slot.SCORE in slots:
        status = incoming.slots.get(Slot.STATUS) if incoming else None
        allowed = SCORE_BANDS.get(status, range(0, 10))
        if slots[Slot.SCORE] not in allowed:
            return False
    return True


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

    def rate(self, check: str) -> float:
        """Overall rate of one check, in %."""
        return 100.0 * sum(row[check] for row in self.rows) / max(len(self.rows), 1)

    def summary(self) -> dict[str, float]:
        return {check: round(self.rate(check), 1) for check in CHECKS}


def score_outputs(examples: list[dict[str, str]], raw_outputs: list[str],
                  eos_token: str | None = None) -> EvalReport:
    """Score raw completions from any runtime (PyTorch, llama.cpp, Ollama)."""
    if len(examples) != len(raw_outputs):
        raise ValueError(f"{len(examples)} examples but {len(raw_outputs)} outputs")
    rows = []
    for ex, raw in zip(examples, raw_outputs):
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
    device = next(model.parameters()).device
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
                outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side  # the trainer shares this tokenizer
    return outputs


def answer_budget(tokenizer, examples: list[dict[str, str]], margin: int = 8) -> int:
    """Enough new tokens for the longest target plus its EOS and a margin; prose gets cut there."""
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
