"""Four agents over a real llama-server (the tiny model on loopback), and the referee's verdicts.

The live test uses an untrained tiny GGUF: its answers are mostly wrong, which is what exercises the
ERROR replies and the repaired deliveries; the checks are on the bookkeeping, which must hold for any model.
"""

import random

import matplotlib
import pytest
from transformers import AutoTokenizer

from slipcore_nb import agents, export
from slipcore_nb.completions import CompletionsClient
from slipcore_nb.conversations import MOVES, ROLES, conversation
from slipcore_nb.dataset import held_out_goals
from slipcore_nb.evaluate import score_answer
from slipcore_nb.grammar import literal, nslip_gbnf
from slipcore_nb.llama_server import LlamaServer
from slipcore_nb.protocol import Act, Frame, Slot, decode, encode
from slipcore_nb.tiny import build_tiny

matplotlib.use("Agg")

DISPATCH = '@a3|f0|c7|S0|d2|T3|g5|k9|p1|q3|t"execute"#'


def sent(answer: str, expected: str = DISPATCH, move: str = "dispatch") -> agents.Sent:
    return agents.Sent(0, move, MOVES[move].role, "instruction", answer, expected,
                       score_answer({"target": expected}, answer), 90, 30, 0.1)


def test_a_right_message_is_delivered_as_sent():
    reordered = '@a3|f0|c7|S0|d2|T3|k9|g5|p1|q3|t"execute"#'  # same message, slots in another order
    message = sent(reordered)
    assert message.right and message.wrong_field is None and message.error_reply is None
    assert message.delivered == reordered


@pytest.mark.parametrize("answer, field", [
    ('@a3|f0|c7|S2|d0|T3|g5|k9|p1|q3|t"execute"#', "src_dst"),
    ('@a3|f0|c7|S0|d2|T4|g5|k9|p1|q3|t"execute"#', "turn"),
    ('@a3|f0|c7|S0|d2|T3|g5|k9|p1|q4|t"execute"#', "rules"),  # priority: fixed by a rule, not an id
    ("I will hand it to the executor.", "valid"),
])
def test_a_wrong_message_is_answered_with_an_error_naming_its_first_wrong_field(answer, field):
    message = sent(answer)
    assert not message.right and message.wrong_field == field
    assert message.delivered == DISPATCH  # the protocol's own message goes on in its place
    error = decode(message.error_reply)
    expected = decode(DISPATCH)
    assert (error.act, error.frame) == (Act.ERROR, Frame.OBSERVATION)
    assert (error.src, error.dst, error.conv, error.turn) == (expected.dst, expected.src, expected.conv, expected.turn + 1)
    assert error.slots[Slot.ERROR_CODE] == ("invalid_nslip" if field == "valid" else f"wrong_{field}")


def test_each_move_goes_to_the_role_that_answers_it():
    """``Move.to`` agrees with the conversations: whoever answers a message is the role it was sent to.

    The one exception is the critic: it reads the executor's report to the coordinator and evaluates it.
    """
    rng = random.Random(5)
    pairs = 0
    for goal in held_out_goals()[:20]:
        script = conversation(rng, goal)
        for before, after in zip(script, script[1:]):
            if after.incoming is not None:
                assert encode(after.incoming) == encode(before.target)
                reader = "critic" if after.move == "evaluate" else MOVES[before.move].to
                assert after.role == reader, (before.move, after.move)
                pairs += 1
    assert pairs > 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gguf = export.to_gguf(build_tiny(), tmp_path_factory.mktemp("agents"), types=("f16",), name="tiny")["f16"].path
    with LlamaServer(gguf, parallel=2, ctx_per_slot=1024, threads=2) as running:
        yield running


@pytest.mark.parametrize("decoding", agents.DECODING)
def test_agents_talk_through_the_server_and_every_message_is_checked(server, decoding):
    goals = held_out_goals()[:3]
    with CompletionsClient(server.base_url) as client:
        report = agents.Agents(client, decoding=decoding, max_tokens=96).run(goals, seed=3, workers=2)
    if decoding != "free":  # an untrained model under a grammar: every message parses
        assert all(message.checks["valid"] for run in report.conversations for message in run.messages)
    if decoding == "state":  # and under the state grammar only its choice of move can be wrong
        assert {m.wrong_field for m in report.messages} <= {None, "act_frame", "rules"}
    assert [run.goal for run in report.conversations] == goals
    for index, run in enumerate(report.conversations):
        script = conversation(random.Random(3 * 1_000_003 + index), goals[index])
        assert [s.move for s in run.messages] == [e.move for e in script]  # the world's choices, in order
        assert [s.expected for s in run.messages] == [encode(e.target) for e in script]
        for message in run.messages:
            assert message.prompt_tokens > 10 and message.completion_tokens >= 1
            assert message.checks == score_answer({"target": message.expected}, message.answer)
    summary = report.summary()
    messages = report.messages
    assert summary["messages"] == len(messages) == sum(len(run.messages) for run in report.conversations)
    assert summary["errors_sent"] == sum(not m.right for m in messages) == len(report.wrong())
    assert summary["completed_clean"] == sum(run.clean for run in report.conversations)
    assert summary["messages_per_second"] > 0
    table = report.scores.table
    assert table.loc["overall", "n"] == len(messages) and table.loc["overall", "valid"] == summary["valid"]
    assert all(decode(error).act == Act.ERROR for error in report.wrong()["ERROR back"])
    tokens = report.token_table(AutoTokenizer.from_pretrained(build_tiny()))
    assert 0 < tokens.loc["total", "nslip"] < tokens.loc["total", "json_compact"]
    run = report.conversations[0]
    labels = [text.get_text() for text in agents.plot_sequence(run).texts]
    assert [label for label in labels if label in ("coordinator", "planner", "executor", "critic")] == list(ROLES)
    assert sum("/" in label for label in labels) == len(run.messages)  # one act/frame arrow per message
    assert sum(label.startswith("ERROR") for label in labels) == sum(not m.right for m in run.messages)

def test_the_agents_read_the_wire(server):
    """Each reply's instruction holds the message delivered just before it, as the wire carries it."""
    goals = held_out_goals()
    index = next(i for i in range(len(goals)) if len(conversation(random.Random(1_000_003 + i), goals[i])) >= 5)
    script = conversation(random.Random(1_000_003 + index), goals[index])  # seed 1, as converse draws it
    with CompletionsClient(server.base_url) as client:
        run = agents.Agents(client, max_tokens=24).converse(index, goals[index], seed=1)
    replies = 0
    for before, after, exchange in zip(run.messages, run.messages[1:], script[1:]):
        if exchange.incoming is not None:
            assert encode(decode(before.delivered)) in after.instruction
            replies += 1
    assert replies >= 3


def test_served_form_agents_ask_the_same_exchanges_in_fewer_tokens(server):
    goals = held_out_goals()[:2]
    with CompletionsClient(server.base_url) as client:
        long = agents.Agents(client, max_tokens=24).run(goals, seed=5, workers=2)
        short = agents.Agents(client, max_tokens=24, served_form=True).run(goals, seed=5, workers=2)
    assert [s.expected for s in short.messages] == [s.expected for s in long.messages]  # the same world
    for sent in short.messages:
        assert sent.instruction.startswith(f"{sent.role} ") and ("in=@" in sent.instruction) != (sent.move == "open")
    assert short.summary()["prompt_tokens"] < 0.75 * long.summary()["prompt_tokens"]  # means per message


def test_an_unknown_decoding_is_refused_by_name():
    with pytest.raises(ValueError, match="decoding must be one of"):
        agents.Agents(None, decoding="grammar")


def test_the_state_grammar_is_built_from_what_the_agent_knows():
    exchange = next(ex for seed in range(50) for ex in conversation(random.Random(seed), held_out_goals()[0])
                    if ex.move == "dispatch")
    team = agents.Agents(None, decoding="state")
    grammar = team.grammar(exchange)
    assert f"dispatch-0 ::= {literal(encode(exchange.target))}\n" in grammar  # dispatch: every field is fixed
    assert agents.Agents(None, decoding="syntax").grammar(exchange) == nslip_gbnf()
    assert agents.Agents(None).grammar(exchange) is None
