"""Token economics: how many tokens an nSLIP message costs next to the same message as JSON.

Two JSON shapes stand in for what agents send each other today:
- compact: one line, no spaces, field and enum names spelled out
  (``{"act":"PROPOSE","frame":"PLAN","conv":1,...,"tag":"plan_v1"}``);
- verbose: the same data nested as header/slots and indented by two spaces, as a person or a
  default ``json.dumps(..., indent=2)`` would write it.
Counts come from a real tokenizer, so the saving is the one that model pays for.
"""

from __future__ import annotations

import json

from .protocol import Message, NSlipError, decode, encode

SHAPES = ("nslip", "json_compact", "json_verbose")


def as_dict(msg: Message) -> dict:
    """Header then slots, with names instead of wire prefixes."""
    if not isinstance(msg, Message):
        raise NSlipError(f"renderings needs a Message (decode(text)), got {type(msg).__name__}")
    return {
        "act": msg.act.name, "frame": msg.frame.name, "conv": msg.conv, "src": msg.src,
        "dst": msg.dst, "turn": msg.turn,
        **{slot.name.lower(): value for slot, value in msg.slots.items()},
    }


def renderings(msg: Message) -> dict[str, str]:
    """The message in every shape of :data:`SHAPES`."""
    flat = as_dict(msg)
    header = {key: flat.pop(key) for key in ("act", "frame", "conv", "src", "dst", "turn")}
    return {
        "nslip": encode(msg),
        "json_compact": json.dumps({**header, **flat}, separators=(",", ":")),
        "json_verbose": json.dumps({"header": header, "slots": flat}, indent=2),
    }


def token_counts(tokenizer, examples: list[dict[str, str]]):
    """One row per example target: its role and its token count in each shape (a DataFrame)."""
    import pandas as pd

    rows = []
    for ex in examples:
        shapes = renderings(decode(ex["target"]))
        counts = {shape: len(tokenizer(text, add_special_tokens=False)["input_ids"])
                  for shape, text in shapes.items()}
        rows.append({"role": ex["role"], **counts})
    return pd.DataFrame(rows)


def savings_table(counts):
    """Mean tokens per shape and % saved by nSLIP, per message type (role) and overall."""
    import pandas as pd

    groups = {role: g for role, g in counts.groupby("role", sort=False)}
    groups["overall"] = counts
    table = pd.DataFrame({
        name: {
            **{f"{shape} tokens": g[shape].mean() for shape in SHAPES},
            "saved vs compact %": 100 * (1 - g["nslip"].sum() / g["json_compact"].sum()),
            "saved vs verbose %": 100 * (1 - g["nslip"].sum() / g["json_verbose"].sum()),
        }
        for name, g in groups.items()
    }).T
    return table.round(1)
