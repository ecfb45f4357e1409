"""A GBNF grammar for nSLIP, generated from :mod:`slipcore_nb.protocol`'s tables.

With the grammar, llama.cpp can only sample canonical messages: header fields in
:data:`~slipcore_nb.protocol.HEADER_FIELDS` order, then optional slots in
:data:`~slipcore_nb.protocol.SLOT_ORDER`, act and frame codes limited to their enums, base62 numbers
without leading zeros, and every slot value either such a number or a string quoted with the
``\\\\`` and ``\\"`` escapes (the spec lets any slot hold either). A protocol change made in
``protocol.py`` changes the grammar with it.

The grammar admits what :func:`~slipcore_nb.protocol.decode` accepts, with the codec's bounds
(:data:`~slipcore_nb.protocol.MAX_INT_DIGITS` digits, :data:`~slipcore_nb.protocol.MAX_STRING_CHARS`
characters, so every constrained generation ends within a bounded number of tokens), less one
thing on purpose: its strings are printable ASCII, where ``decode`` also reads other printable
Unicode (SLIPCore's reference encoder writes any text; the models here are taught ASCII).

The tests check it with llama.cpp's own grammar engine (``tests/grammar_checker.py``), not with a
second matcher written in Python.
"""

from __future__ import annotations

import typing
from enum import IntEnum
from pathlib import Path

from . import whole_files
from .protocol import (BASE62_DIGITS, END, ESCAPE, HEADER_FIELDS, MAX_INT_DIGITS, MAX_STRING_CHARS, QUOTE, SEP,
                       SLOT_ORDER, START, Message, to_base62)

ROOT = "root"


def literal(text: str) -> str:
    """A GBNF string literal; only backslash and double quote need escaping in our alphabet."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _char_class(chars: str) -> str:
    """``[...]`` for a set of ASCII characters, with consecutive runs written as ranges and \\x escapes."""
    codes = sorted({ord(ch) for ch in chars})
    runs: list[tuple[int, int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    parts = [f"\\x{lo:02X}" if lo == hi else f"\\x{lo:02X}-\\x{hi:02X}" for lo, hi in runs]
    return "[" + "".join(parts) + "]"


def _repeat(item: str, most: int | None) -> str:
    return f"{item}*" if most is None else f"{item}{{0,{most}}}"


def nslip_gbnf(max_int_digits: int | None = MAX_INT_DIGITS, max_string_chars: int | None = MAX_STRING_CHARS) -> str:
    """The grammar text (root rule ``root``); ``None`` lifts a length bound."""
    enum_of = {name: hint for name, hint in typing.get_type_hints(Message).items()
               if isinstance(hint, type) and issubclass(hint, IntEnum)}
    rules: dict[str, str] = {}

    header = [literal(START)]
    for i, (prefix, attr) in enumerate(HEADER_FIELDS.items()):
        header.append(literal((SEP if i else "") + prefix))
        if attr in enum_of:
            rules[attr] = " | ".join(literal(to_base62(member.value)) for member in enum_of[attr])
            header.append(attr)
        else:
            header.append("int")
    slots = []
    for slot in SLOT_ORDER:
        name = "slot-" + slot.name.lower().replace("_", "-")
        rules[name] = f"{literal(SEP + slot.value)} value"
        slots.append(f"{name}?")
    rules = {ROOT: " ".join(header + slots + [literal(END)]), **rules}

    rules.update(value_rules(max_int_digits, max_string_chars))
    return render(rules)


def value_rules(max_int_digits: int | None = MAX_INT_DIGITS, max_string_chars: int | None = MAX_STRING_CHARS
                ) -> dict[str, str]:
    """The rules of a field value (``value``: ``int`` or ``string``), shared with the state grammar.

    A bound is ``None`` (no limit) or an int from 1 up to the codec's own (a grammar wider than
    :func:`~slipcore_nb.protocol.decode` would admit messages it refuses)."""
    for name, value, most in (("max_int_digits", max_int_digits, MAX_INT_DIGITS),
                              ("max_string_chars", max_string_chars, MAX_STRING_CHARS)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most):
            raise ValueError(f"{name} must be None or an int from 1 to {most} (what decode accepts), got {value!r}")
    nonzero = BASE62_DIGITS[1:]
    most = None if max_int_digits is None else max_int_digits - 1
    printable = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in (QUOTE, ESCAPE))
    return {
        "value": "int | string",
        "int": f"{literal(BASE62_DIGITS[0])} | {_char_class(nonzero)} {_repeat(_char_class(BASE62_DIGITS), most)}",
        "string": f"{literal(QUOTE)} {_repeat('string-char', max_string_chars)} {literal(QUOTE)}",
        "string-char": f"{_char_class(printable)} | {literal(ESCAPE)} {_char_class(QUOTE + ESCAPE)}",
    }


def render(rules: dict[str, str]) -> str:
    """GBNF text, one ``name ::= body`` line per rule (the first is the start rule)."""
    return "".join(f"{name} ::= {body}\n" for name, body in rules.items())


def write_gbnf(path: str | Path, **bounds) -> Path:
    """Write the grammar to a ``.gbnf`` file (for ``llama-cli --grammar-file`` or a notebook to show)."""
    return whole_files.write_text(path, nslip_gbnf(**bounds))
