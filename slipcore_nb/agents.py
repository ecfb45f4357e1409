"""Four agents on one served model: coordinator, planner, executor and critic talk nSLIP, live.

What happens in the world (whether the planner must ask first, how the executor's run ends) comes
from :func:`slipcore_nb.conversations.conversation`; every message on the wire is written by the
model, asked through an OpenAI-compatible server (:class:`slipcore_nb.completions.CompletionsClient`)
in wording it never saw in training (the ``unseen`` phrase pools). Each message is decoded and checked
the moment it is sent against what the protocol says it must be. A wrong one is kept, counted and
answered by its addressee with an ERROR naming the first wrong field (``e"wrong_src_dst"``); then the
protocol's own message is delivered in its place (marked repaired), so the rest of the conversation is
still measured instead of derailed. Conversations run side by side, one thread each, so a server with
parallel slots batches them, which is how agents load a server.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from .completions import CompletionsClient
from .conversations import MOVES, ROLES, conversation
from .economics import renderings
from .evaluate import DETERMINED, EvalReport, clean_answer, score_answer
from .grammar import nslip_gbnf
from .instructions import instruction, served_instruction
from .prompts import PROMPT
from .protocol import Act, Frame, Message, Slot, decode, encode
from .state_grammar import state_gbnf

# The order in which a wrong message's first wrong field is named in the ERROR sent back.
FIELD_ORDER = ("valid", *DETERMINED, "rules")


@dataclass(frozen=True)
class Sent:
    """One message an agent sent: its prompt, its answer, what the protocol expected, and the verdict."""

    conversation: int
    move: str
    role: str
    instruction: str
    answer: str
    expected: str
    checks: dict[str, bool]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cached_tokens: int = 0

    @property
    def right(self) -> bool:
        """Protocol-correct and every rule-fixed slot right: the message can be delivered as sent."""
        return self.checks["protocol_correct"] and self.checks["rules"]

    @property
    def wrong_field(self) -> str | None:
        return next((name for name in FIELD_ORDER if not self.checks[name]), None)

    @property
    def delivered(self) -> str:
        """What the addressee receives: the answer when right, else the protocol's message (repaired)."""
        return self.answer if self.right else self.expected

    @property
    def error_reply(self) -> str | None:
        """The addressee's ERROR for a wrong message, naming the first wrong field; None when right."""
        if self.right:
            return None
        expected = decode(self.expected)
        code = "invalid_nslip" if self.wrong_field == "valid" else f"wrong_{self.wrong_field}"
        return encode(Message(conv=expected.conv, turn=expected.turn + 1, src=expected.dst, dst=expected.src,
                              act=Act.ERROR, frame=Frame.OBSERVATION,
                              slots={Slot.ERROR_CODE: code, Slot.TAG: "rejected"}))


@dataclass(frozen=True)
class ConversationRun:
    goal: str
    messages: tuple[Sent, ...]

    @property
    def clean(self) -> bool:
        """Every message right as the model sent it: no ERROR, nothing repaired."""
        return all(sent.right for sent in self.messages)

    @property
    def retries(self) -> int:
        return sum(sent.move == "retry" for sent in self.messages)


# free: the model's own tokens; syntax: nSLIP's grammar (every answer parses, any field may be wrong);
# state: the protocol's state (the runtime fixes what it knows, the model picks a legal move).
DECODING = ("free", "syntax", "state")


class Agents:
    """The four roles as agents of one model behind ``client``, decoding one of :data:`DECODING`'s ways.

    ``decoding="syntax"`` sends :func:`~slipcore_nb.grammar.nslip_gbnf` with every request;
    ``"state"`` sends each request its own :func:`~slipcore_nb.state_grammar.state_gbnf`, built from
    what this agent knows (its role and id, the message it answers, its facts). ``served_form`` asks
    in the short form served agents use (about half the prompt tokens) instead of unseen wording;
    ``adapter_of_role`` adds each role's request fields on llama-server (role adapters on one base:
    :func:`slipcore_nb.role_adapters.request_fields`).
    """

    def __init__(self, client: CompletionsClient, decoding: str = "free", max_tokens: int = 64,
                 eos_token: str | None = None, served_form: bool = False, adapter_of_role: dict | None = None):
        if decoding not in DECODING:
            raise ValueError(f"decoding must be one of {DECODING}, got {decoding!r}")
        self.client, self.decoding, self.max_tokens, self.eos_token = client, decoding, max_tokens, eos_token
        self.served_form, self.adapter_of_role = served_form, adapter_of_role
        self.syntax = nslip_gbnf()

    def grammar(self, exchange) -> str | None:
        """The GBNF sent with this agent's request, or None (free decoding)."""
        if self.decoding == "state":
            return state_gbnf(exchange.role, exchange.me, exchange.incoming, exchange.facts)
        return self.syntax if self.decoding == "syntax" else None

    def send(self, index: int, exchange, rng: random.Random) -> Sent:
        """The agent of ``exchange.role`` answers its incoming message; the answer is checked at once."""
        words = served_instruction(exchange) if self.served_form else instruction(exchange, rng, unseen=True)
        grammar = self.grammar(exchange)
        # With a grammar the message ends at '#'; a stop such as '###' could cut a tag the grammar admits.
        stop = [] if grammar else None
        adapter = self.adapter_of_role[exchange.role] if self.adapter_of_role else {}
        reply = self.client.complete(PROMPT.prompt(words), max_tokens=self.max_tokens, grammar=grammar,
                                     stop=stop, **adapter)
        answer = clean_answer(reply.text, self.eos_token)
        expected = encode(exchange.target)
        return Sent(index, exchange.move, exchange.role, words, answer, expected,
                    score_answer({"target": expected}, answer), reply.prompt_tokens, reply.completion_tokens,
                    reply.seconds, reply.cached_tokens)

    def converse(self, index: int, goal: str, seed: int) -> ConversationRun:
        """One conversation about ``goal``, message by message; the world's choices are seeded.

        An incoming message is always the one delivered just before: the agent reads the wire.
        """
        rng = random.Random(seed * 1_000_003 + index)
        messages: list[Sent] = []
        for exchange in conversation(rng, goal):
            if exchange.incoming is not None:
                exchange = replace(exchange, incoming=decode(messages[-1].delivered))
            messages.append(self.send(index, exchange, rng))
        return ConversationRun(goal, tuple(messages))

    def run(self, goals: list[str], seed: int = 0, workers: int = 4) -> "AgentsReport":
        """Every goal's conversation, ``workers`` of them at a time."""
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            runs = list(pool.map(lambda args: self.converse(*args, seed), enumerate(goals)))
        return AgentsReport(runs, time.perf_counter() - began, workers)


@dataclass
class AgentsReport:
    conversations: list[ConversationRun]
    seconds: float
    workers: int

    @property
    def messages(self) -> list[Sent]:
        return [sent for run in self.conversations for sent in run.messages]

    @property
    def messages_per_second(self) -> float:
        return len(self.messages) / self.seconds if self.seconds else 0.0

    @property
    def scores(self) -> EvalReport:
        """The live messages scored like any eval run: ``.table`` per role, ``.summary()`` overall."""
        return EvalReport([{"role": sent.role, **sent.checks} for sent in self.messages])

    def summary(self) -> dict:
        messages, rates = self.messages, self.scores.summary()

        def per_message(count) -> float:
            return round(sum(map(count, messages)) / max(1, len(messages)), 1)

        return {
            "conversations": len(self.conversations),
            "completed_clean": sum(run.clean for run in self.conversations),
            "messages": len(messages),
            "errors_sent": sum(not sent.right for sent in messages),
            "retries": sum(run.retries for run in self.conversations),
            "prompt_tokens": per_message(lambda sent: sent.prompt_tokens),
            "cached_prompt_tokens": per_message(lambda sent: sent.cached_tokens),
            "messages_per_second": round(self.messages_per_second, 2),
            "parallel_conversations": self.workers,
            **{check: rates[check] for check in ("valid", "protocol_correct", "rules", "valid_but_wrong")},
        }

    def wrong(self):
        """Every wrong message with the ERROR its addressee sent back (none hidden)."""
        import pandas as pd

        return pd.DataFrame([{"conversation": s.conversation, "role": s.role, "move": s.move, "sent": s.answer,
                              "expected": s.expected, "first wrong field": s.wrong_field, "ERROR back": s.error_reply}
                             for s in self.messages if not s.right])

    def token_table(self, tokenizer):
        """Tokens per conversation on the wire, nSLIP vs the same messages as compact JSON."""
        import pandas as pd

        def tokens(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        per_conversation = []
        for run in self.conversations:
            shapes = [renderings(decode(sent.delivered)) for sent in run.messages]
            per_conversation.append({shape: sum(tokens(r[shape]) for r in shapes)
                                     for shape in ("nslip", "json_compact")})
        frame = pd.DataFrame(per_conversation)
        return pd.DataFrame({"tokens per conversation (mean)": frame.mean().round(1),
                             "total": frame.sum()}).T.assign(
            saved_percent=lambda t: (100 * (1 - t["nslip"] / t["json_compact"])).round(1))


def plot_modes(reports: dict[str, "AgentsReport"], ax=None):
    """One bar pair per decoding mode: messages right as sent (%) and conversations clean (%), msg/s above."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.9 * len(reports) + 2, 3.6))
    for i, (name, report) in enumerate(reports.items()):
        summary = report.summary()
        right = 100.0 * (1 - summary["errors_sent"] / max(1, summary["messages"]))
        clean = 100.0 * summary["completed_clean"] / max(1, summary["conversations"])
        ax.bar(i - 0.19, right, 0.36, color="tab:blue", label="messages right" if i == 0 else None)
        ax.bar(i + 0.19, clean, 0.36, color="tab:green", label="conversations clean" if i == 0 else None)
        ax.text(i - 0.19, right + 1, f"{right:.0f} %", ha="center", va="bottom", fontsize=8)
        ax.text(i + 0.19, clean + 1, f"{summary['completed_clean']}/{summary['conversations']}", ha="center",
                va="bottom", fontsize=8)
        ax.text(i, -13, f"{summary['messages_per_second']} msg/s", ha="center", fontsize=8, color="0.35")
    ax.set_xticks(range(len(reports)), list(reports))
    ax.set_ylim(-16, 112)
    ax.set_yticks(range(0, 101, 25))
    ax.set_ylabel("%")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("the same conversations, decoded each way", fontsize=10)
    return ax


def plot_sequence(run: ConversationRun, ax=None):
    """A message-sequence chart: one lifeline per role, one arrow per message, wrong ones in red with their ERROR."""
    import matplotlib.pyplot as plt

    lanes = {role: i for i, role in enumerate(ROLES)}
    rows = len(run.messages) + sum(not s.right for s in run.messages)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.55 * rows + 1.2))
    for role, x in lanes.items():
        ax.axvline(x, color="0.75", lw=1, zorder=0)
        ax.text(x, -0.6, role, ha="center", va="bottom", fontsize=9, weight="bold")
    y = 0
    for sent in run.messages:
        message = decode(sent.delivered)
        src, dst = sent.role, MOVES[sent.move].to
        colour = "tab:green" if sent.right else "tab:red"
        _arrow(ax, lanes[src], lanes[dst], y, colour, f"{message.act.name}/{message.frame.name} "
               f"T{message.turn} {message.slots.get(Slot.TAG, '')}" + ("" if sent.right else "  (repaired)"))
        y += 1
        if not sent.right:
            code = decode(sent.error_reply).slots[Slot.ERROR_CODE]
            _arrow(ax, lanes[dst], lanes[src], y, "tab:red", f'ERROR e"{code}"', dashed=True)
            y += 1
    ax.set_ylim(y, -1)
    ax.set_xlim(-0.6, len(ROLES) - 0.4)
    ax.axis("off")
    ax.set_title(f"conversation {run.messages[0].conversation}: {run.goal}", fontsize=10)
    return ax


def _arrow(ax, x0: float, x1: float, y: float, colour: str, label: str, dashed: bool = False) -> None:
    ax.annotate("", xy=(x1, y), xytext=(x0, y),
                arrowprops=dict(arrowstyle="->", color=colour, lw=1.4, linestyle="--" if dashed else "-"))
    ax.text((x0 + x1) / 2, y - 0.12, label, ha="center", va="bottom", fontsize=7.5, color=colour)
