"""The state grammar: every message it admits obeys the move table, and the protocol's own answer is admitted.

Checked with the engines that enforce it: llama.cpp's grammar sampler (tiny model's vocabulary, in a
child process) and xgrammar (vLLM's and SGLang's). The property test draws agent states from the
conversation generator and widens them (other ids in the incoming message, facts left out), then
samples at high temperature under each state's grammar: whatever comes out must decode and be a
legal move with every fixed field as :func:`~slipcore_nb.conversations.fixed_fields` says.
"""

import random

import pytest

from grammar_checker import GrammarChecker
from slipcore_nb import export
from slipcore_nb.conversations import (BY_TAG, MAX_AGENT_ID, MAX_ID, MOVE_OF_TAG, MOVES, ROLES, STATUSES, Exchange,
                                       ProtocolError, conversation, fixed_fields, legal_moves, message)
from slipcore_nb.dataset import held_out_goals
from slipcore_nb.native import run_in_child
from slipcore_nb.protocol import Act, Frame, Message, Slot, decode, encode
from slipcore_nb.state_grammar import state_gbnf
from slipcore_nb.tiny import build_tiny

FACT_KEYS = ("conv", "planner", "task", "priority", "executor", "subtask", "result", "error_code")


def exchanges(conversations: int = 60, seed: int = 11) -> list:
    rng = random.Random(seed)
    goals = held_out_goals()
    return [ex for i in range(conversations) for ex in conversation(rng, goals[i % len(goals)])]


def reference_chain(plans: list) -> list:
    """SLIPCore's own chain, REQUEST -> PROPOSE -> INFORM -> EVAL, which the generator does not walk: an
    executor reads each plan (sent to the coordinator) and reports its outcome."""
    out = []
    for i, plan in enumerate(plans):
        me = next(agent for agent in range(MAX_AGENT_ID + 1) if agent not in (plan.src, plan.dst))
        status = STATUSES[i % len(STATUSES)]
        facts = {"goal_id": plan.slots[Slot.GOAL_ID], "outcome": status, "result": 1 + i}
        target = message("report", plan, me, facts, f"exec_{status}", STATUS=status)
        out.append(Exchange("report", plan, target, facts))
    return out


_GENERATED = exchanges()
EXCHANGES = reference_chain([ex.target for ex in _GENERATED if ex.move == "plan"][:12]) + _GENERATED


def obeys(role: str, me: int, incoming, facts: dict, text: str) -> list[str]:
    """What is wrong with ``text`` as this agent's message under the move table ([] when nothing)."""
    message = decode(text)
    move = MOVE_OF_TAG.get(message.slots.get(Slot.TAG))
    if move not in legal_moves(role, incoming, facts):
        return [f"tag {message.slots.get(Slot.TAG)!r} is no legal move of the {role}"]
    spec, fixed = MOVES[move], fixed_fields(move, incoming, me, facts)
    problems = [] if (message.act, message.frame) == (spec.act, spec.frame) else ["act/frame"]
    problems += [name for name, value in fixed.header.items() if value is not None and getattr(message, name) != value]
    if list(message.slots) != list(fixed.slots):
        problems.append(f"slots {[s.value for s in message.slots]} != {[s.value for s in fixed.slots]}")
    for slot, value in fixed.slots.items():
        got = message.slots.get(slot)
        if slot is Slot.TAG or got is None:
            continue
        if value is not None and got != value or slot in BY_TAG and got not in BY_TAG[slot][message.slots[Slot.TAG]]:
            problems.append(slot.name)
    return problems


def mutations(target: str) -> list[str]:
    """The protocol's answer with one fixed field wrong: each must be refused."""
    message = decode(target)
    out = []
    for attr in ("conv", "turn", "src", "dst"):
        out.append(encode(Message(**{**vars(message), attr: getattr(message, attr) + 1})))
    digit = Act.REJECT if message.act != Act.REJECT else Act.ACCEPT  # the act digit alone, the tag kept
    out.append(encode(Message(**{**vars(message), "act": digit})))
    for slot in (Slot.GOAL_ID, Slot.TASK_ID, Slot.PARENT_TASK_ID, Slot.PRIORITY):
        if slot in message.slots and isinstance(message.slots[slot], int):
            out.append(encode(Message(**{**vars(message), "slots": {**message.slots, slot: message.slots[slot] + 1}})))
    return out


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return export.to_gguf(build_tiny(), tmp_path_factory.mktemp("state"), types=("f16",), name="tiny")["f16"].path


def _verdicts(gguf, cases: list[tuple[str, str]]) -> list[bool]:
    checker = GrammarChecker(gguf)
    try:
        return [checker.accepts(text, gbnf) for gbnf, text in cases]
    finally:
        checker.close()


def _cases() -> list[tuple[str, str, bool]]:
    """(grammar, text, should be admitted): each exchange's target, then its mutations."""
    cases = []
    for ex in EXCHANGES[:120]:
        gbnf = state_gbnf(ex.role, ex.me, ex.incoming, ex.facts)
        target = encode(ex.target)
        cases.append((gbnf, target, True))
        cases += [(gbnf, wrong, False) for wrong in mutations(target) if wrong != target]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def verdicts(gguf):
    return run_in_child(_verdicts, gguf, [(g, t) for g, t, _ in CASES], what="llama.cpp on state grammars")


def test_the_protocols_answer_is_admitted_and_every_wrong_fixed_field_refused(verdicts):
    moves = {MOVE_OF_TAG[decode(text).slots[Slot.TAG]] for _, text, ok in CASES if ok}
    assert moves == set(MOVES)  # every move of the table is among the cases
    wrong = [(text, ok) for (_, text, ok), verdict in zip(CASES, verdicts) if verdict != ok]
    assert wrong == []


def test_xgrammar_gives_llama_cpps_verdicts(verdicts):
    """vLLM and SGLang enforce the same text through xgrammar: same verdict on every case."""
    got = run_in_child(_xgrammar_verdicts, build_tiny(), [(g, t) for g, t, _ in CASES], what="xgrammar")
    assert got == verdicts


def _xgrammar_verdicts(model_dir, cases):
    import xgrammar
    from transformers import AutoTokenizer

    info = xgrammar.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(model_dir))
    compiler = xgrammar.GrammarCompiler(info)
    out = []
    for gbnf, text in cases:
        matcher = xgrammar.GrammarMatcher(compiler.compile_grammar(gbnf))
        out.append(matcher.accept_string(text) and matcher.accept_token(info.stop_token_ids[0])
                   and matcher.is_terminated())
    return out


def _sampled_states_obey_the_move_table(gguf, examples: int) -> dict:
    """Hypothesis draws agent states; llama.cpp samples under each state's grammar (child process)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from llama_cpp import LlamaGrammar

    from slipcore_nb.prompts import PROMPT
    from slipcore_nb.answering import load_llama

    llm = load_llama(gguf, n_ctx=512)
    seen: dict[str, int] = {}

    @st.composite
    def states(draw):
        exchange = draw(st.sampled_from(EXCHANGES))
        me, incoming = exchange.me, exchange.incoming
        facts = {k: v for k, v in exchange.facts.items()
                 if k not in draw(st.sets(st.sampled_from(FACT_KEYS), max_size=3))}
        if incoming is not None and draw(st.booleans()):  # another message of the same kind, other ids
            ids = st.integers(0, MAX_ID)
            slots = {slot: draw(ids) for slot in (Slot.GOAL_ID, Slot.TASK_ID, Slot.PARENT_TASK_ID, Slot.RESULT_ID)
                     if draw(st.booleans())}
            slots[Slot.TAG] = incoming.slots[Slot.TAG]
            incoming = Message(conv=draw(ids), turn=draw(st.integers(1, 300)), src=draw(st.integers(0, 35)),
                               dst=incoming.dst, act=incoming.act, frame=incoming.frame, slots=slots)
            overhears = MOVES[exchange.move].addressing_of((incoming.act, incoming.frame)) == "overhear"
            me = me if overhears else incoming.dst
        if not legal_moves(exchange.role, incoming, facts):  # an executor that read a plan and holds no outcome
            facts = exchange.facts
        return exchange.role, me, incoming, facts

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(states(), st.integers(0, 2**31 - 1))
    def check(state, seed):
        role, me, incoming, facts = state
        grammar = LlamaGrammar.from_string(state_gbnf(role, me, incoming, facts), verbose=False)
        out = llm(PROMPT.prompt("anything"), grammar=grammar, temperature=2.0, top_k=0, top_p=1.0, min_p=0.0,
                  max_tokens=300, seed=seed)["choices"][0]
        assert out["finish_reason"] == "stop", out
        assert obeys(role, me, incoming, facts, out["text"]) == [], (state, out["text"])
        move = MOVE_OF_TAG[decode(out["text"]).slots[Slot.TAG]]
        seen[move] = seen.get(move, 0) + 1

    try:
        check()
    finally:
        llm.close()
    return seen


def test_every_sampled_message_obeys_the_move_table(gguf):
    seen = run_in_child(_sampled_states_obey_the_move_table, gguf, 300, what="llama.cpp sampling under state grammars")
    assert sum(seen.values()) == 300
    assert len(seen) >= len(MOVES) - 2  # the sampler reached (nearly) every move


def test_legal_moves_follow_the_table():
    assert legal_moves("planner", None) == ["plan"]  # the guide's case: a goal and nothing else
    assert legal_moves("coordinator", None) == ["open"]
    request = decode('@a3|f0|c7|S0|d1|T1|g5|k9|q3|t"new_task"#')
    assert legal_moves("planner", request) == ["plan", "ask", "decline", "commit"]
    evaluation = decode('@a8|f3|c7|S3|d0|T5|g5|k9|p1|r2|s5|t"eval_retry"#')
    assert legal_moves("coordinator", evaluation) == ["retry"]
    for role in ROLES:
        assert all(MOVES[move].role == role for ex in EXCHANGES for move in legal_moves(role, ex.incoming))


def test_an_executors_outcome_decides_between_reporting_and_answering_that_it_started():
    """What the executor holds is state the runtime knows: a result is reported, an error code is sent
    as an ERROR, and with neither it can only say it started or is busy (the model's choice)."""
    task = decode('@a3|f0|c7|S0|d2|T3|g5|kC|p9|q3|t"execute"#')
    assert legal_moves("executor", task) == ["accept", "busy", "report", "error"]
    assert legal_moves("executor", task, {}) == ["accept", "busy"]
    assert legal_moves("executor", task, {"result": 5}) == ["report"]
    assert legal_moves("executor", task, {"error_code": "timeout"}) == ["error"]
    assert state_gbnf("executor", 2, task, {"result": 5}).startswith("root ::= report-0 | report-1 | report-2\n")


def test_slipcores_reference_chain_the_executor_reports_a_plan_to_its_addressee():
    """REQUEST -> PROPOSE -> INFORM -> EVAL: the executor reads the planner's PLAN to the coordinator and
    reports to that coordinator (as the critic reads a report), one turn on; the coordinator dispatches it."""
    plan = decode('@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#')
    assert legal_moves("executor", plan) == ["report", "error"]
    assert legal_moves("executor", plan, {"result": 5}) == ["report"]
    assert legal_moves("coordinator", plan) == ["dispatch"]
    facts = {"goal_id": 1, "result": 5}
    assert encode(message("report", plan, 2, facts, "exec_done", STATUS="done")) == \
        '@a1|f2|c1|S2|d0|T3|g1|k1|r5|u"done"|t"exec_done"#'
    assert encode(message("error", plan, 2, {"goal_id": 1, "error_code": "timeout"})) == \
        '@a9|f2|c1|S2|d0|T3|g1|k1|e"timeout"|t"exec_error"#'
    rules = [line for line in state_gbnf("executor", 2, plan, facts).splitlines() if line.startswith("report-")]
    assert [line.split(" ::= ")[1] for line in rules] == [
        f'"@a1|f2|c1|S2|d0|T3|g1|k1|r5|u\\"{status}\\"|t\\"exec_{status}\\"#"' for status in STATUSES]


def test_the_guides_prompt_has_one_message():
    grammar = state_gbnf("planner", 1, None, {"goal_id": 1})
    assert 'root ::= plan-0\nplan-0 ::= "@a4|f1|c1|S1|d0|T2|g1|k1|q3|t\\"plan_v1\\"#"\n' in grammar


@pytest.mark.parametrize("args, says", [
    (("tester", 1, None, {}), "role must be one of"),
    (("executor", 2, None, {}), "no move of the executor answers nothing"),
    (("coordinator", 0, decode('@a6|f0|c7|S2|d0|T4|g5|k9|p1|t"accepted"#'), {}), "answers ACCEPT/TASK"),
    (("planner", -1, None, {"goal_id": 1}), "non-negative int"),
    (("planner", True, None, {"goal_id": 1}), "non-negative int"),
    (("planner", 1, None, {}), "needs facts['goal_id']"),
    (("planner", 4, decode('@a3|f0|c7|S0|d1|T1|g5|k9|q3|t"new_task"#'), {}), "addressed to agent 1, not to 4"),
])
def test_a_state_the_table_does_not_cover_is_refused_by_name(args, says):
    with pytest.raises(ProtocolError, match=says.replace("[", r"\[").replace("]", r"\]")):
        state_gbnf(*args)


def test_a_fact_left_out_is_the_models_choice():
    plan = decode('@a4|f1|c7|S1|d0|T2|g5|k9|q3|t"plan_v1"#')
    told = state_gbnf("coordinator", 0, plan, {"executor": 2, "subtask": 12})
    untold = state_gbnf("coordinator", 0, plan, {})
    assert '"@a3|f0|c7|S0|d2|T3|g5|kC|p9|q3|t\\"execute\\"#"' in told
    assert '"@a3|f0|c7|S0|d" int "|T3|g5|k" value "|p9|q3|t\\"execute\\"#"' in untold
    assert (Act.REQUEST, Frame.TASK) == (MOVES["dispatch"].act, MOVES["dispatch"].frame)


@pytest.mark.parametrize("facts, says", [
    ({"executor": 2.0, "subtask": 12}, "dispatch: dst needs a non-negative int"),
    ({"executor": "2", "subtask": 12}, "dispatch: dst needs a non-negative int"),
    ({"executor": 2, "subtask": -1}, "dispatch: slot TASK_ID needs a non-negative int"),
])
def test_a_fact_the_wire_cannot_carry_is_refused_by_name(facts, says):
    from slipcore_nb.protocol import NSlipError

    plan = decode('@a4|f1|c7|S1|d0|T2|g5|k9|q3|t"plan_v1"#')
    with pytest.raises(NSlipError, match=says):
        state_gbnf("coordinator", 0, plan, facts)


def test_an_error_code_with_a_line_break_is_refused():
    from slipcore_nb.protocol import NSlipError

    task = decode('@a3|f0|c7|S0|d2|T3|g5|kC|p9|q3|t"execute"#')
    with pytest.raises(NSlipError, match="error: slot ERROR_CODE: control character"):
        state_gbnf("executor", 2, task, {"error_code": "time\nout"})
