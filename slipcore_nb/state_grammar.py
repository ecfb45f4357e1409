"""A grammar per request that knows the protocol's state: what the runtime knows, not what the model learned.

An agent runtime already holds most of what the model is asked to repeat: its role and id, the
message it answers, the facts it was given (its executor, a new subtask id). From those,
:func:`~slipcore_nb.conversations.fixed_fields` fixes the reply's conversation, turn, sender,
addressee and copied ids, and :func:`~slipcore_nb.conversations.legal_moves` names the moves the role
may make there with those facts (an executor holding a result reports it; one holding none can only
say it started or is busy). :func:`state_gbnf` writes those fields as literals and offers one alternative per
legal move and tag, each with its own act and frame digits, so a digit can never disagree with its tag.
The model keeps the choices that are its own: which legal move, a report's status and the critic's
score (each tied to its tag), and any id or agent no fact gives.

Every message this grammar admits therefore obeys :data:`~slipcore_nb.conversations.MOVES`; whether
it is the *right* move is still the model's doing. Scores under it measure the runtime and the
model together: quote them beside free decoding, never instead of it.

llama-server takes the text per request (the ``grammar`` field); xgrammar (vLLM, SGLang) compiles
the same text (a test holds the two engines to the same verdicts).
"""

from __future__ import annotations

from .conversations import BY_TAG, MOVES, ProtocolError, fixed_fields, legal_moves
from .grammar import ROOT, literal, render, value_rules
from .protocol import (END, HEADER_FIELDS, MAX_INT_DIGITS, MAX_STRING_CHARS, SEP, START, Message, Slot, check_string,
                       int_text, quote, to_base62)


def _wire(value: int | str, field: str) -> str:
    """A value as the wire writes it; one the codec would refuse (a float, a line break) is an error
    naming its field, so the grammar never admits a message ``decode`` refuses."""
    if isinstance(value, str):
        check_string(value, field)
        return quote(value)
    return int_text(value, field, "or a str")


def _sequence(parts: list[str | tuple[str]]) -> str:
    """GBNF for a run of wire text (``str``) and rule references (1-tuples), adjacent text merged."""
    out, text = [], ""
    for part in parts:
        if isinstance(part, str):
            text += part
            continue
        if text:
            out.append(literal(text))
            text = ""
        out.append(part[0])
    if text:
        out.append(literal(text))
    return " ".join(out)


def _alternative(move: str, tag: str, fixed) -> str:
    """One legal message shape: the move's act and frame, the fixed fields, this tag and its tied values."""
    spec = MOVES[move]
    header = {"act": spec.act, "frame": spec.frame, **fixed.header}
    parts: list[str | tuple[str]] = [START]
    for i, (prefix, attr) in enumerate(HEADER_FIELDS.items()):
        parts.append((SEP if i else "") + prefix)
        value = header[attr]
        parts.append(("int",) if value is None else to_base62(value) if attr in ("act", "frame")
                     else int_text(value, f"{move}: {attr}"))
    for slot, value in fixed.slots.items():
        parts.append(SEP + slot.value)
        if slot is Slot.TAG:
            parts.append(quote(tag))
        elif value is not None:
            parts.append(_wire(value, f"{move}: slot {slot.name}"))
        elif slot in BY_TAG:
            choices = [_wire(choice, f"{move}: slot {slot.name}") for choice in BY_TAG[slot][tag]]
            parts.append(choices[0] if len(choices) == 1 else ("(" + " | ".join(map(literal, choices)) + ")",))
        else:
            parts.append(("value",))
    parts.append(END)
    return _sequence(parts)


def state_gbnf(role: str, me: int, incoming: Message | None, facts: dict | None = None,
               max_int_digits: int | None = MAX_INT_DIGITS, max_string_chars: int | None = MAX_STRING_CHARS) -> str:
    """The grammar for agent ``me`` of ``role`` answering ``incoming`` (``None``: it starts, or, as a
    planner, answers the guide's implied opening) with ``facts`` (the keys the dataset's exchanges use:
    ``goal_id``, ``conv``, ``planner``, ``task``, ``priority``, ``executor``, ``subtask``, ``result``,
    ``error_code``). Raises :class:`~slipcore_nb.conversations.ProtocolError` where no move applies."""
    if isinstance(me, bool) or not isinstance(me, int) or me < 0:
        raise ProtocolError(f"me (the agent's own id) must be a non-negative int, got {me!r}")
    facts = facts or {}
    moves = legal_moves(role, incoming, facts)
    if not moves:
        received = "nothing" if incoming is None else f"{incoming.act.name}/{incoming.frame.name}"
        raise ProtocolError(f"no move of the {role} answers {received} (see conversations.MOVES)")
    rules: dict[str, str] = {ROOT: ""}
    names = []
    for move in moves:
        fixed = fixed_fields(move, incoming, me, facts)
        for i, tag in enumerate(MOVES[move].tags):
            name = f"{move}-{i}"
            rules[name] = _alternative(move, tag, fixed)
            names.append(name)
    rules[ROOT] = " | ".join(names)
    rules.update(value_rules(max_int_digits, max_string_chars))
    return render(rules)
