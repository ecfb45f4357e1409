"""The SLIPCore message model and the nSLIP wire codec.

A message on the wire looks like ``@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#``: an ``@``, then
``|``-separated fields, each a one-letter prefix and a value, then ``#``. Header values are base62
integers (``0-9A-Za-z``). A slot value is, as SLIPCore's spec v0.1 says, a base62 integer **or** a
double-quoted string with ``\\\\`` and ``\\"`` escapes, in any slot (``u"done"`` is the spec's status),
so a value may hold ``|``, ``#``, ``"`` and ``\\``. That is why :func:`decode` is a character-level
tokenizer and not a ``split("|")``.

:func:`decode` reads every message SLIPCore's reference encoder (slipcore 0.1, ``encode_message``)
writes: ints or strings in any slot, slots in any order. It is stricter than the reference decoder
on purpose, so a model that drifts is caught instead of silently read: the reference skips empty
fields (``||``), reads an empty value as ``""`` or ``0``, lets a repeated field overwrite the first
and strips whitespace around the message; here each is an error naming its position
(:func:`extract` finds a message inside other text, never inside another message's string). It also
reads ``|`` and ``#`` inside a quoted value, which the reference's ``split("|")`` cannot.

It accepts what the GBNF grammar (:mod:`slipcore_nb.grammar`) admits: numbers without a leading zero
and of at most :data:`MAX_INT_DIGITS` digits, strings of at most :data:`MAX_STRING_CHARS` characters
without control characters (a message is one line), so decoding takes time linear in the text. It
is wider in one place: strings may hold printable non-ASCII characters, as the reference writes them.

Everything else in the package (grammar, evaluation, dataset validation) is derived from the
tables in this module, so a change to the protocol is made here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum

BASE62_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGIT_VALUE = {ch: i for i, ch in enumerate(BASE62_DIGITS)}

START, END, SEP, QUOTE, ESCAPE = "@", "#", "|", '"', "\\"
# The bounds every message keeps, here and in the GBNF grammar (:mod:`slipcore_nb.grammar`): 62**11 > 2**64,
# so any 64-bit id fits; they also bound a message's length, so decoding is linear and generation ends.
MAX_INT_DIGITS = 11
MAX_STRING_CHARS = 64


class NSlipError(ValueError):
    """Raised for anything that is not a well-formed nSLIP message (text or Message)."""


class Act(IntEnum):
    OBSERVE = 0
    INFORM = 1
    ASK = 2
    REQUEST = 3
    PROPOSE = 4
    COMMIT = 5
    ACCEPT = 6
    REJECT = 7
    EVAL = 8
    ERROR = 9
    META = 10


class Frame(IntEnum):
    TASK = 0
    PLAN = 1
    OBSERVATION = 2
    EVALUATION = 3
    CONTROL = 4


class Slot(Enum):
    """Optional payload fields; the value is the wire prefix. Order here is the canonical order."""

    GOAL_ID = "g"
    TASK_ID = "k"
    PARENT_TASK_ID = "p"
    RESULT_ID = "r"
    PRIORITY = "q"
    SCORE = "s"
    STATUS = "u"
    ERROR_CODE = "e"
    TAG = "t"


# Header fields: wire prefix -> Message attribute, in canonical order.
HEADER_FIELDS: dict[str, str] = {
    "a": "act",
    "f": "frame",
    "c": "conv",
    "S": "src",
    "d": "dst",
    "T": "turn",
}
SLOT_BY_PREFIX: dict[str, Slot] = {slot.value: slot for slot in Slot}
SLOT_ORDER: tuple[Slot, ...] = tuple(Slot)


@dataclass
class Message:
    """One SLIPCore message. ``slots`` maps :class:`Slot` to an ``int`` or a ``str``, in any slot."""

    conv: int
    turn: int
    src: int
    dst: int
    act: Act
    frame: Frame
    slots: dict[Slot, int | str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- base62


def to_base62(n: int) -> str:
    """Non-negative integer the wire can carry (below ``62**MAX_INT_DIGITS``) -> base62 digits (10 -> 'A',
    61 -> 'z', 62 -> '10')."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n >= 62**MAX_INT_DIGITS:
        raise NSlipError(f"base62 needs a non-negative int below 62**{MAX_INT_DIGITS}, got {n!r}")
    digits = []
    while True:
        n, rem = divmod(n, 62)
        digits.append(BASE62_DIGITS[rem])
        if n == 0:
            return "".join(reversed(digits))


def from_base62(text: str) -> int:
    """Base62 digits -> integer; raises NSlipError on a non-string, an empty string, a bad digit or more
    than :data:`MAX_INT_DIGITS` digits (so a long input fails at once instead of costing quadratic time)."""
    if not isinstance(text, str):
        raise NSlipError(f"base62 digits must be a str, got {type(text).__name__}")
    if not text:
        raise NSlipError("empty base62 number")
    if len(text) > MAX_INT_DIGITS:
        raise NSlipError(f"base62 number of {len(text)} digits, at most {MAX_INT_DIGITS}")
    value = 0
    for i, ch in enumerate(text):
        if ch not in _DIGIT_VALUE:
            raise NSlipError(f"bad base62 digit {ch!r} at offset {i}")
        value = value * 62 + _DIGIT_VALUE[ch]
    return value


# ---------------------------------------------------------------------------- encode


def quote(text: str) -> str:
    """Quote a string value for the wire: backslash and double quote are escaped, nothing else. A value
    :func:`decode` would refuse (not a str, too long, a control character) is refused here."""
    check_string(text, "quoted value")
    return QUOTE + text.replace(ESCAPE, ESCAPE * 2).replace(QUOTE, ESCAPE + QUOTE) + QUOTE


def encode(msg: Message) -> str:
    """Canonical wire form: header a f c S d T, then slots in :data:`SLOT_ORDER`.

    Takes what :func:`decode` gives back and nothing else: integers (not floats, bools or digit
    strings) within :data:`MAX_INT_DIGITS` base62 digits, strings of at most :data:`MAX_STRING_CHARS`
    characters without control characters; an error names the field it refuses.
    """
    if not isinstance(msg, Message):
        raise NSlipError(f"encode needs a Message, got {type(msg).__name__}")
    if not isinstance(msg.slots, dict):
        raise NSlipError(f"slots must be a dict keyed by Slot, got {type(msg.slots).__name__}")
    _check_enum(msg.act, Act, "act")
    _check_enum(msg.frame, Frame, "frame")
    unknown = [key for key in msg.slots if not isinstance(key, Slot)]
    if unknown:
        raise NSlipError(f"slots must be keyed by Slot, got {unknown!r}")
    fields = [prefix + int_text(getattr(msg, attr), attr) for prefix, attr in HEADER_FIELDS.items()]
    for slot in SLOT_ORDER:
        if slot not in msg.slots:
            continue
        value = msg.slots[slot]
        if isinstance(value, str):
            check_string(value, f"slot {slot.name}")
            fields.append(slot.value + quote(value))
        else:
            fields.append(slot.value + int_text(value, f"slot {slot.name}", "or a str"))
    return START + SEP.join(fields) + END


def int_text(value, field: str, other: str = "") -> str:
    """``value`` in base62 if it is an int the wire can carry, else an error naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 62**MAX_INT_DIGITS:
        raise NSlipError(f"{field} needs a non-negative int below 62**{MAX_INT_DIGITS}{' ' + other if other else ''}, "
                         f"got {value!r}")
    return to_base62(value)


def check_string(value: str, field: str) -> None:
    """Refuse, naming ``field``, a string :func:`decode` would refuse (too long, a control character)."""
    if not isinstance(value, str):
        raise NSlipError(f"{field} must be a str, got {type(value).__name__}")
    if len(value) > MAX_STRING_CHARS:
        raise NSlipError(f"{field}: a string of {len(value)} characters, at most {MAX_STRING_CHARS}")
    bad = next((ch for ch in value if _is_control(ch)), None)
    if bad is not None:
        raise NSlipError(f"{field}: control character {bad!r} in a string (one message is one line of text)")


def _is_control(ch: str) -> bool:
    return ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000


def _check_enum(value, enum_cls, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in enum_cls._value2member_map_:
        raise NSlipError(f"{name} must be one of {[m.name for m in enum_cls]}, got {value!r}")


# ---------------------------------------------------------------------------- decode


class _Parser:
    """Reads one message starting at ``pos`` and stops right after its closing ``#``.

    Errors carry the character position in the whole text, so a user can find the fault.
    """

    def __init__(self, text: str, pos: int):
        self.text = text
        self.pos = pos

    def fail(self, reason: str, pos: int | None = None) -> NSlipError:
        at = self.pos if pos is None else pos
        return NSlipError(f"position {at}: {reason}")

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def parse(self) -> Message:
        if self.peek() != START:
            raise self.fail(f"message must start with '{START}'")
        self.pos += 1
        header: dict[str, int] = {}
        slots: dict[Slot, int | str] = {}
        while True:
            self.read_field(header, slots)
            ch = self.peek()
            if ch == SEP:
                self.pos += 1
            elif ch == END:
                self.pos += 1
                break
            elif ch is None:
                raise self.fail(f"missing closing '{END}'")
            else:
                raise self.fail(f"unexpected {ch!r} after a field value")
        missing = [prefix for prefix in HEADER_FIELDS if prefix not in header]
        if missing:
            names = ", ".join(f"'{p}' ({HEADER_FIELDS[p]})" for p in missing)
            raise self.fail(f"missing header field {names}", self.pos - 1)
        return Message(
            conv=header["c"],
            turn=header["T"],
            src=header["S"],
            dst=header["d"],
            act=Act(header["a"]),
            frame=Frame(header["f"]),
            slots=slots,
        )

    def read_field(self, header: dict[str, int], slots: dict[Slot, int | str]) -> None:
        start = self.pos
        prefix = self.peek()
        if prefix is None:
            raise self.fail(f"missing closing '{END}'")
        if prefix in (SEP, END):
            raise self.fail("empty field")
        self.pos += 1
        if prefix in HEADER_FIELDS:
            if prefix in header:
                raise self.fail(f"duplicate header field '{prefix}'", start)
            value = self.read_int(prefix)
            enum_cls = {"a": Act, "f": Frame}.get(prefix)
            if enum_cls is not None and value not in enum_cls._value2member_map_:
                raise self.fail(
                    f"{enum_cls.__name__.lower()} code {value} out of range 0..{len(enum_cls) - 1}",
                    start + 1,
                )
            header[prefix] = value
        elif prefix in SLOT_BY_PREFIX:
            slot = SLOT_BY_PREFIX[prefix]
            if slot in slots:
                raise self.fail(f"duplicate slot '{prefix}' ({slot.name})", start)
            slots[slot] = self.read_string(prefix) if self.peek() == QUOTE else self.read_int(prefix)
        else:
            raise self.fail(f"unknown field prefix {prefix!r}", start)

    def read_int(self, prefix: str) -> int:
        start = self.pos
        while self.peek() is not None and self.peek() not in (SEP, END):
            ch = self.text[self.pos]
            if ch not in _DIGIT_VALUE:
                raise self.fail(f"bad base62 digit {ch!r} in field '{prefix}'")
            if self.pos - start == MAX_INT_DIGITS:
                raise self.fail(f"number in field '{prefix}' longer than {MAX_INT_DIGITS} digits", start)
            self.pos += 1
        if self.pos == start:
            raise self.fail(f"empty field '{prefix}': a value is required")
        if self.text[start] == BASE62_DIGITS[0] and self.pos - start > 1:
            raise self.fail(f"leading zero in field '{prefix}' (numbers are written without one)", start)
        return from_base62(self.text[start : self.pos])

    def read_string(self, prefix: str) -> str:
        """A quoted value; the parser stands on its opening quote."""
        open_at = self.pos
        self.pos += 1
        out = []
        while True:
            ch = self.peek()
            if ch is None:
                raise self.fail(f"unterminated string opened at position {open_at}")
            self.pos += 1
            if ch == QUOTE:
                break
            if ch == ESCAPE:
                escaped = self.peek()
                if escaped is None:
                    raise self.fail(f"unterminated string opened at position {open_at}")
                if escaped not in (ESCAPE, QUOTE):
                    raise self.fail(f"bad escape '\\{escaped}' in string (only \\\\ and \\\")", self.pos - 1)
                self.pos += 1
                ch = escaped
            elif _is_control(ch):
                raise self.fail(f"control character {ch!r} in the string of field '{prefix}'", self.pos - 1)
            if len(out) == MAX_STRING_CHARS:
                raise self.fail(f"string in field '{prefix}' longer than {MAX_STRING_CHARS} characters", open_at)
            out.append(ch)
        after = self.peek()
        if after is not None and after not in (SEP, END):
            raise self.fail(f"text after closing quote of field '{prefix}'")
        return "".join(out)


def decode(text: str) -> Message:
    """Strictly parse exactly one message; any defect raises :class:`NSlipError` naming its position."""
    if not isinstance(text, str):
        raise NSlipError(f"decode needs a str, got {type(text).__name__}")
    if not text:
        raise NSlipError("position 0: empty input")
    parser = _Parser(text, 0)
    msg = parser.parse()
    if parser.pos != len(text):
        raise parser.fail(f"text after closing '{END}'")
    return msg


def extract(text: str) -> Message | None:
    """The first well-formed message inside ``text`` (model output with prose, whitespace), else None."""
    if not isinstance(text, str):
        raise NSlipError(f"extract needs a str, got {type(text).__name__}")
    pos = text.find(START)
    while pos != -1:
        parser = _Parser(text, pos)
        try:
            return parser.parse()
        except NSlipError:
            # Resume where the attempt failed: what it read (numbers, quoted strings) holds no message.
            pos = text.find(START, max(pos + 1, parser.pos))
    return None


def is_valid(text: str) -> bool:
    """True when ``text`` is exactly one well-formed message."""
    try:
        decode(text)
    except NSlipError:
        return False
    return True
