"""The nSLIP codec: hand-written wire cases, every rejection with its position, and properties."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipcore_nb.protocol import (
    BASE62_DIGITS, Act, Frame, Message, NSlipError, Slot, decode, encode, extract, from_base62,
    is_valid, to_base62,
)

PLAN = '@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#'


def test_issue_example_decodes_base62_and_escaped_tag():
    msg = decode('@a8|f3|cz|S3|d0|T4|g10|s9|t"a|b#c\\"d"#')
    assert (msg.conv, msg.slots[Slot.GOAL_ID], msg.slots[Slot.TAG]) == (61, 62, 'a|b#c"d')
    assert (msg.act, msg.frame, msg.src, msg.dst, msg.turn) == (Act.EVAL, Frame.EVALUATION, 3, 0, 4)
    assert msg.slots[Slot.SCORE] == 9


def test_readme_example_round_trips():
    msg = decode(PLAN)
    assert msg == Message(conv=1, turn=2, src=1, dst=0, act=Act.PROPOSE, frame=Frame.PLAN,
                          slots={Slot.GOAL_ID: 1, Slot.TASK_ID: 1, Slot.PRIORITY: 3, Slot.TAG: "plan_v1"})
    assert encode(msg) == PLAN


@pytest.mark.parametrize("n, text", [(0, "0"), (9, "9"), (10, "A"), (35, "Z"), (36, "a"), (61, "z"),
                                     (62, "10"), (3843, "zz"), (3844, "100")])
def test_base62(n, text):
    assert to_base62(n) == text
    assert from_base62(text) == n


def test_encode_is_canonical_whatever_the_input_order():
    shuffled = '@T2|t"plan_v1"|d0|q3|S1|k1|c1|g1|f1|a4#'
    assert encode(decode(shuffled)) == PLAN


def test_the_specs_example_decodes_to_its_values():
    """SLIPCore spec v0.1, section 4: REQUEST goal 17, task 42, priority 2, tag "refactor_auth"."""
    msg = decode('@a3|f0|c3|S0|d1|T1|gH|kg|q2|t"refactor_auth"#')
    assert msg == Message(conv=3, turn=1, src=0, dst=1, act=Act.REQUEST, frame=Frame.TASK,
                          slots={Slot.GOAL_ID: 17, Slot.TASK_ID: 42, Slot.PRIORITY: 2, Slot.TAG: "refactor_auth"})


def test_any_slot_holds_an_int_or_a_string_as_the_spec_says():
    """STATUS is "a short status string" (u"in_progress"); the reference encoder writes either type anywhere."""
    msg = decode('@a1|f2|c1|S2|d0|T3|g1|k1|r1|u"in_progress"|t"exec_status"#')
    assert msg.slots[Slot.STATUS] == "in_progress" and msg.slots[Slot.RESULT_ID] == 1
    both = decode('@a4|f1|c1|S1|d0|T2|g"auth-7"|tA#')
    assert both.slots == {Slot.GOAL_ID: "auth-7", Slot.TAG: 10}
    assert encode(both) == '@a4|f1|c1|S1|d0|T2|g"auth-7"|tA#'


def test_what_the_reference_encoder_writes_is_read():
    """slipcore 0.1's encode_message: header a f c S d T, then slots in the caller's dict order."""
    assert decode('@a8|f3|c5|S3|d0|T4|t"eval_pass"|s9|u"done"|g2#').slots == {
        Slot.TAG: "eval_pass", Slot.SCORE: 9, Slot.STATUS: "done", Slot.GOAL_ID: 2}
    assert decode('@a4|f1|c1|S1|d0|T2|t""#').slots == {Slot.TAG: ""}


def test_tag_escapes_round_trip():
    msg = decode(PLAN)
    msg.slots[Slot.TAG] = 'back\\slash "quoted" |pipe| #hash#'
    wire = encode(msg)
    assert wire.endswith('t"back\\\\slash \\"quoted\\" |pipe| #hash#"#')
    assert decode(wire) == msg


# Each malformed input, the position the error must name, and a word of the reason.
REJECTIONS = [
    ("", 0, "empty input"),
    ('a4|f1|c1|S1|d0|T2#', 0, "must start with '@'"),
    ('@a4|f1|c1|S1|d0|T2', 18, "missing closing '#'"),
    ('@a4|f1|c1|S1|d0|T2|g1', 21, "missing closing '#'"),
    ('@a4|f1|c1|S1|d0#', 15, "missing header field 'T' (turn)"),
    ('@f1|c1|S1|d0|T2#', 15, "missing header field 'a' (act)"),
    ('@a4|a1|f1|c1|S1|d0|T2#', 4, "duplicate header field 'a'"),
    ('@a4|f1|c1|S1|d0|T2|g1|g2#', 22, "duplicate slot 'g'"),
    ('@a4|f1|c1|S1|d0|T2|x1#', 19, "unknown field prefix 'x'"),
    ('@a4||f1|c1|S1|d0|T2#', 4, "empty field"),
    ('@a4|f1|c1|S1|d0|T2|#', 19, "empty field"),
    ('@a4|f1|c|S1|d0|T2#', 8, "empty field 'c'"),
    ('@a4|f1|c1|S1|d0|T2|t#', 20, "empty field 't'"),
    ('@a4|f1|c1|S1|d0|T2|g1!#', 21, "bad base62 digit '!'"),
    ('@a4|f1|c1|S1|d-1|T2#', 14, "bad base62 digit '-'"),
    ('@aB|f1|c1|S1|d0|T2#', 2, "act code 11 out of range"),
    ('@a4|f5|c1|S1|d0|T2#', 5, "frame code 5 out of range"),
    ('@a4|f1|c1|S1|d0|T2|t"plan#', 26, "unterminated string opened at position 20"),
    ('@a4|f1|c1|S1|d0|T2|t"plan\\', 26, "unterminated string opened at position 20"),
    ('@a4|f1|c1|S1|d0|T2|tplan!#', 24, "bad base62 digit '!'"),
    ('@a4|f1|c1|S1|d0|T2|t"plan"x#', 26, "text after closing quote"),
    ('@a4|f1|c1|S1|d0|T2|t"a\\n"#', 22, "bad escape"),
    ('@a4|f1|c1|S1|d0|T2|g1"x"#', 21, "bad base62 digit '\"'"),
    ('@a4|f1|c1|S1|d0|T2|u"done"|u"done"#', 27, "duplicate slot 'u'"),
    ('@a4|f"1"|c1|S1|d0|T2#', 5, "bad base62 digit '\"'"),
    ('@a4|f1|c1|S1|d0|T2#\n', 19, "text after closing '#'"),
    ('@a4|f1|c1|S1|d0|T2## ', 19, "text after closing '#'"),
    (' @a4|f1|c1|S1|d0|T2#', 0, "must start with '@'"),
    ('@a4 |f1|c1|S1|d0|T2#', 3, "bad base62 digit ' '"),
    ('@a4|f1|c01|S1|d0|T2#', 8, "leading zero in field 'c'"),
    ('@a4|f1|c1|S1|d0|T2|g00#', 20, "leading zero in field 'g'"),
    ('@a4|f1|c1|S1|d0|T' + "z" * 12 + '#', 17, "longer than 11 digits"),
    ('@a4|f1|c1|S1|d0|T2|g' + "1" * 100_000 + '#', 20, "longer than 11 digits"),
    ('@a4|f1|c1|S1|d0|T2|t"a\nb"#', 22, "control character '\\n'"),
    ('@a4|f1|c1|S1|d0|T2|t"a\x00b"#', 22, "control character '\\x00'"),
    ('@a4|f1|c1|S1|d0|T2|t"' + "x" * 65 + '"#', 20, "longer than 64 characters"),
]


@pytest.mark.parametrize("text, position, reason", REJECTIONS)
def test_decode_rejects_with_position_and_reason(text, position, reason):
    with pytest.raises(NSlipError) as err:
        decode(text)
    assert f"position {position}:" in str(err.value)
    assert reason in str(err.value)


def test_nslip_error_is_a_value_error():
    assert issubclass(NSlipError, ValueError)


def test_decode_rejects_non_str():
    with pytest.raises(NSlipError):
        decode(b"@a4#")


@pytest.mark.parametrize("bad", [
    Message(1, 2, 1, 0, 11, Frame.PLAN),
    Message(1, 2, 1, 0, Act.PROPOSE, 7),
    Message(-1, 2, 1, 0, Act.PROPOSE, Frame.PLAN),
    Message(1, 2, 1, 0, Act.PROPOSE, Frame.PLAN, {Slot.TAG: 2.5}),
    Message(1, 2, 1, 0, Act.PROPOSE, Frame.PLAN, {Slot.GOAL_ID: -1}),
    Message(1, 2, 1, 0, Act.PROPOSE, Frame.PLAN, {Slot.STATUS: True}),
    Message(1, 2, 1, 0, Act.PROPOSE, Frame.PLAN, {"g": 1}),
])
def test_encode_rejects_invalid_messages(bad):
    with pytest.raises(NSlipError):
        encode(bad)


@pytest.mark.parametrize("field, value, says", [
    ("conv", 1.9, "conv needs a non-negative int"), ("turn", True, "turn needs a non-negative int"),
    ("src", "5", "src needs a non-negative int"), ("dst", 62**11, "dst needs a non-negative int below 62**11"),
    ("slots", {Slot.TASK_ID: 2.0}, "slot TASK_ID needs a non-negative int below 62**11 or a str"),
    ("slots", {Slot.TAG: "line\nbreak"}, "slot TAG: control character"),
    ("slots", {Slot.STATUS: "x" * 65}, "slot STATUS: a string of 65 characters, at most 64"),
])
def test_encode_takes_integers_only_and_names_the_field(field, value, says):
    message = Message(conv=1, turn=2, src=1, dst=0, act=Act.PROPOSE, frame=Frame.PLAN)
    setattr(message, field, value)
    with pytest.raises(NSlipError, match=re.escape(says)):
        encode(message)


def test_decode_reads_printable_unicode_in_strings_as_the_reference_writes_it():
    assert decode('@a4|f1|c1|S1|d0|T2|t"café ✓"#').slots[Slot.TAG] == "café ✓"


def test_extract_never_finds_a_message_inside_a_string():
    hidden = '@a4|f1|c1|S1|d0|T2|t"quoting @a1|f2|c1|S2|d0|T3#'
    assert extract(hidden) is None
    after = '@a1|f2|c1|S2|d0|T4#'  # the first message breaks after its string; the next one is found
    assert extract(hidden + '" then ' + after) == decode(after)
    assert extract('@a4|f1|c1|S1|d0|T2|t"x"!' + " then " + PLAN) == decode(PLAN)


def test_extract_finds_the_first_well_formed_message_in_prose():
    text = 'Sure! The reply is @oops then\n  ' + PLAN + ' and also @a1|f2|c1|S2|d0|T3#.'
    assert extract(text) == decode(PLAN)
    assert extract("no message here") is None
    assert extract("@a4|f1|c1|S1|d0") is None


def test_is_valid():
    assert is_valid(PLAN)
    assert not is_valid(PLAN + " ")


# ---------------------------------------------------------------------------- properties

ids = st.integers(min_value=0, max_value=62 ** 4)
tags = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@st.composite
def messages(draw):
    slots = {}
    for slot in draw(st.sets(st.sampled_from(list(Slot)))):
        slots[slot] = draw(st.one_of(tags, ids))  # the spec lets any slot hold either
    return Message(conv=draw(ids), turn=draw(ids), src=draw(ids), dst=draw(ids),
                   act=draw(st.sampled_from(list(Act))), frame=draw(st.sampled_from(list(Frame))),
                   slots=slots)


@given(messages())
@settings(max_examples=400)
def test_random_messages_round_trip(msg):
    wire = encode(msg)
    assert decode(wire) == msg
    assert encode(decode(wire)) == wire
    assert extract(f"prose before {wire} prose after") == msg


WIRE_CHARS = BASE62_DIGITS + '@#|"\\ afcSdTgkprqsuet\n'


@given(st.text(alphabet=WIRE_CHARS, max_size=60))
@settings(max_examples=1000)
def test_random_strings_raise_only_nslip_error(text):
    try:
        decode(text)
    except NSlipError as err:
        assert re.match(r"position \d+: ", str(err))
    extract(text)


@given(messages(), st.data())
@settings(max_examples=1000)
def test_mutated_valid_strings_raise_only_nslip_error(msg, data):
    wire = encode(msg)
    i = data.draw(st.integers(0, len(wire) - 1))
    op = data.draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
    ch = data.draw(st.sampled_from(WIRE_CHARS))
    mutated = {
        "delete": wire[:i] + wire[i + 1:],
        "insert": wire[:i] + ch + wire[i:],
        "replace": wire[:i] + ch + wire[i + 1:],
        "truncate": wire[:i],
    }[op]
    try:
        result = decode(mutated)
    except NSlipError as err:
        assert re.match(r"position \d+: ", str(err))
    else:
        assert encode(result) == encode(decode(encode(result)))
