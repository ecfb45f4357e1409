"""Synthetic SLIPCore conversations: what each agent answers, to whom, with which fields.

This module holds the protocol's side of the dataset and no wording: a conversation is a list of
:class:`Exchange` (the message an agent received, the facts it was told, the message it must send).
:mod:`slipcore_nb.instructions` turns each exchange into an instruction in one of many wordings.

The conversation grammar (the README's table is :func:`grammar_table`, checked by a test):

- A reply goes **from the addressee of the incoming message to its sender**, in the same
  conversation, with turn = incoming turn + 1, copying the goal ``g``, task ``k`` and parent ``p`` ids.
  Three moves are not replies: the critic reads the executor's report to the coordinator and sends its
  EVAL to that coordinator, and the coordinator hands a plan (a new subtask) or a retry to the executor.
- The coordinator opens (turn 1, REQUEST/TASK to the planner). The planner PROPOSEs a plan, or ASKs
  a question (the coordinator INFORMs, the planner then proposes), or REJECTs the task, or COMMITs to
  do it itself. The coordinator hands the plan to the executor as a subtask ``k`` with parent ``p``.
  The executor ACCEPTs it, REJECTs it (busy), reports the outcome (INFORM/OBSERVATION with status
  ``u"done"``, ``u"partial"`` or ``u"failed"``) or reports an ERROR with its code ``e``. The critic
  EVALuates a report; the coordinator then closes (META/CONTROL), re-issues the subtask for a retry
  (turns keep counting) or aborts.
- Values an instruction does not state take the defaults of SLIPCore's own examples: coordinator 0,
  planner 1, executor 2, critic 3, conversation 1, task 1, priority 3. So the guide's prompt "You are a
  planner agent. Goal[1]: ..." has one right answer, ``@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .protocol import Act, Frame, Message, Slot

ROLES: tuple[str, ...] = ("coordinator", "planner", "executor", "critic")
DEFAULT_IDS: dict[str, int] = {"coordinator": 0, "planner": 1, "executor": 2, "critic": 3}
DEFAULT_CONV, DEFAULT_TASK, DEFAULT_PRIORITY = 1, 1, 3
MAX_ID = 62 * 62 - 1  # conversation, goal, task and result ids take one or two base62 digits
MAX_AGENT_ID = 35  # agent ids are one digit: 0-9, A-Z
PRIORITIES = range(1, 6)
STATUSES = ("done", "partial", "failed")
# The critic's rule, learnable from its input: the reported status (or an error) fixes score and verdict.
CRITIC_RULE: dict[str, tuple[int, str]] = {
    "done": (9, "eval_pass"), "partial": (5, "eval_retry"), "failed": (2, "eval_fail"), "error": (0, "eval_fail"),
}
ERROR_CODES = ("timeout", "out_of_memory", "permission_denied", "disk_full", "conflict", "not_found",
               "rate_limited", "bad_input", "crashed", "unavailable")  # quoted strings, as the spec allows
MAX_ATTEMPTS = 3  # the executor gets a subtask at most this often


@dataclass(frozen=True)
class Move:
    """One kind of answer: who sends it and to whom, act/frame/tag, and what it answers (None: it opens)."""

    role: str
    to: str  # the role it is sent to
    act: Act
    frame: Frame
    answers: str | None
    tags: tuple[str, ...]
    when: str


MOVES: dict[str, Move] = {
    "open": Move("coordinator", "planner", Act.REQUEST, Frame.TASK, None, ("new_task",), "a goal to delegate"),
    "plan": Move("planner", "coordinator", Act.PROPOSE, Frame.PLAN, "REQUEST/TASK, INFORM/TASK or none",
                 ("plan_v1",), "the task can be planned"),
    "ask": Move("planner", "coordinator", Act.ASK, Frame.TASK, "REQUEST/TASK", ("need_info",),
                "a question blocks the plan"),
    "decline": Move("planner", "coordinator", Act.REJECT, Frame.TASK, "REQUEST/TASK", ("declined",),
                    "it cannot take the task"),
    "commit": Move("planner", "coordinator", Act.COMMIT, Frame.TASK, "REQUEST/TASK", ("committed",),
                   "the task is small enough to do itself"),
    "answer": Move("coordinator", "planner", Act.INFORM, Frame.TASK, "ASK/TASK", ("answer",), "the planner asked"),
    "dispatch": Move("coordinator", "executor", Act.REQUEST, Frame.TASK, "PROPOSE/PLAN", ("execute",),
                     "a plan arrived (to the executor, new subtask k, parent p)"),
    "accept": Move("executor", "coordinator", Act.ACCEPT, Frame.TASK, "REQUEST/TASK", ("accepted",),
                   "it started, no result yet"),
    "busy": Move("executor", "coordinator", Act.REJECT, Frame.TASK, "REQUEST/TASK", ("busy",), "it is busy"),
    "report": Move("executor", "coordinator", Act.INFORM, Frame.OBSERVATION, "REQUEST/TASK",
                   tuple(f"exec_{status}" for status in STATUSES), "it has an outcome (u = status, r = result)"),
    "error": Move("executor", "coordinator", Act.ERROR, Frame.OBSERVATION, "REQUEST/TASK", ("exec_error",),
                  "it hit an error (e = code)"),
    "evaluate": Move("critic", "coordinator", Act.EVAL, Frame.EVALUATION,
                     "INFORM/OBSERVATION or ERROR/OBSERVATION", ("eval_pass", "eval_retry", "eval_fail"),
                     "a report arrived (to its coordinator)"),
    "close": Move("coordinator", "critic", Act.META, Frame.CONTROL, "EVAL/EVALUATION", ("close",),
                  "the verdict is eval_pass"),
    "retry": Move("coordinator", "executor", Act.REQUEST, Frame.TASK, "EVAL/EVALUATION", ("retry",),
                  "the verdict is eval_retry (to the executor, same k and p)"),
    "abort": Move("coordinator", "critic", Act.META, Frame.CONTROL, "EVAL/EVALUATION", ("abort",),
                  "the verdict is eval_fail"),
}

# Every tag belongs to one move: a message's tag says which situation it answers (per-move scores).
MOVE_OF_TAG: dict[str, str] = {tag: name for name, move in MOVES.items() for tag in move.tags}


def grammar_table() -> str:
    """:data:`MOVES` as the markdown table the README shows: which act answers which, and when."""
    rows = ["| role | receives | answers with | when | tag `t` |", "|---|---|---|---|---|"]
    for move in MOVES.values():
        tags = ", ".join(f"`{tag}`" for tag in move.tags)
        rows.append(f"| {move.role} | {move.answers or '—'} | {move.act.name}/{move.frame.name} | {move.when} | {tags} |")
    return "\n".join(rows)


# Goal texts: verbs x features (x components) -> thousands of distinct goals, short and long.
VERBS = ("Add", "Implement", "Refactor", "Fix", "Document", "Test", "Optimize", "Harden",
         "Migrate", "Monitor", "Review", "Simplify")
FEATURES = ("rate limiting", "caching", "retry logic", "input validation", "structured logging",
            "pagination", "authentication", "metrics export", "error handling", "feature flags",
            "request tracing", "database indexes", "batch processing", "health checks",
            "audit logging", "timeouts", "schema migrations", "backpressure",
            "dead-letter queues", "config reloading")
COMPONENTS = ("the payments API", "the user service", "the search index", "the billing worker",
              "the notification queue", "the auth gateway", "the inventory service",
              "the reporting pipeline", "the mobile backend", "the admin dashboard",
              "the file uploader", "the email sender", "the order service", "the chat server",
              "the data exporter", "the scheduler")
GOAL_TEMPLATES = ("{verb} {feature} in {component}", "{verb} {feature} for {component}",
                  "{verb} the {feature} of {component}")
GUIDE_GOAL = "Add rate limiting"  # the guide's example goal: its prompt stays out of the training data
GUIDE_PROMPT = f"You are a planner agent. Goal[1]: {GUIDE_GOAL}. Respond with nSLIP."  # the guide's, word for word
GUIDE_ANSWER = '@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#'  # its one right answer (SLIPCore's default ids)


def all_goal_texts() -> list[str]:
    """Every goal text the generator can use, in a fixed order (short ones like the guide's too)."""
    long_goals = [template.format(verb=verb, feature=feature, component=component)
                  for template in GOAL_TEMPLATES for verb in VERBS for feature in FEATURES
                  for component in COMPONENTS]
    short_goals = [f"{verb} {feature}" for verb in VERBS for feature in FEATURES]
    return long_goals + [goal for goal in short_goals if goal != GUIDE_GOAL]


@dataclass
class Exchange:
    """One training example before wording: a role got ``incoming`` (or nothing) and ``facts``, and sends ``target``.

    ``facts`` holds what the instruction must state (goal, own id, ids to use, outcome...); keys ending
    in ``_default`` are True where the value is SLIPCore's default and the wording may leave it out.
    """

    move: str
    incoming: Message | None
    target: Message
    facts: dict = field(default_factory=dict)

    @property
    def role(self) -> str:
        return MOVES[self.move].role


@dataclass
class _Cast:
    """The agents and ids of one conversation."""

    agents: dict[str, int]
    conv: int
    task: int
    defaults: bool


def _cast(rng: random.Random) -> _Cast:
    if rng.random() < 0.25:  # SLIPCore's own numbering: instructions may leave the ids out
        return _Cast(dict(DEFAULT_IDS), DEFAULT_CONV, rng.choice((DEFAULT_TASK, rng.randint(2, MAX_ID))), True)
    agents = dict(zip(ROLES, rng.sample(range(MAX_AGENT_ID + 1), len(ROLES))))
    return _Cast(agents, rng.randint(2, MAX_ID), rng.randint(2, MAX_ID), False)


def _message(move: str, conv: int, turn: int, src: int, dst: int, tag: str | None = None, **slots) -> Message:
    spec = MOVES[move]
    values = {Slot[name]: value for name, value in slots.items() if value is not None}
    values[Slot.TAG] = tag or spec.tags[0]
    return Message(conv=conv, turn=turn, src=src, dst=dst, act=spec.act, frame=spec.frame, slots=values)


def _reply(move: str, incoming: Message, tag: str | None = None, **slots) -> Message:
    """The reply rule: from the addressee to the sender, same conversation, next turn."""
    return _message(move, incoming.conv, incoming.turn + 1, incoming.dst, incoming.src, tag, **slots)


def _ids(message: Message) -> dict[str, int | str]:
    keep = ("GOAL_ID", "TASK_ID", "PARENT_TASK_ID")
    return {name: message.slots[Slot[name]] for name in keep if Slot[name] in message.slots}


def conversation(rng: random.Random, goal_text: str) -> list[Exchange]:
    """One conversation about ``goal_text``: every message in it, each one an :class:`Exchange`."""
    cast = _cast(rng)
    who = cast.agents
    goal_id = rng.choice((1, rng.randint(2, MAX_ID))) if cast.defaults else rng.randint(1, MAX_ID)
    priority = rng.choice(PRIORITIES) if rng.random() < 0.6 else DEFAULT_PRIORITY
    base = {"goal_id": goal_id, "goal_text": goal_text, "defaults": cast.defaults}
    out: list[Exchange] = []

    def add(move: str, incoming: Message | None, target: Message, **facts) -> Message:
        out.append(Exchange(move, incoming, target, {**base, **facts}))
        return target

    if rng.random() < 0.3:  # the guide's style: a planner gets a goal and nothing else
        me = who["planner"] if rng.random() < 0.5 else DEFAULT_IDS["planner"]
        add("plan", None, _message("plan", DEFAULT_CONV, 2, me, DEFAULT_IDS["coordinator"], GOAL_ID=goal_id,
                                   TASK_ID=DEFAULT_TASK, PRIORITY=DEFAULT_PRIORITY),
            me_default=me == DEFAULT_IDS["planner"])

    request = add("open", None, _message("open", cast.conv, 1, who["coordinator"], who["planner"], GOAL_ID=goal_id,
                                         TASK_ID=cast.task, PRIORITY=priority),
                  conv=cast.conv, planner=who["planner"], task=cast.task, priority=priority,
                  priority_default=priority == DEFAULT_PRIORITY)
    choice = rng.random()
    if choice < 0.08:
        add("decline", request, _reply("decline", request, **_ids(request)))
        return out
    if choice < 0.16:
        add("commit", request, _reply("commit", request, **_ids(request), PRIORITY=priority))
        return out
    if choice < 0.32:
        asked = add("ask", request, _reply("ask", request, **_ids(request), PRIORITY=priority))
        informed = add("answer", asked, _reply("answer", asked, **_ids(asked), PRIORITY=priority))
        plan = add("plan", informed, _reply("plan", informed, **_ids(informed), PRIORITY=priority))
    else:
        plan = add("plan", request, _reply("plan", request, **_ids(request), PRIORITY=priority))

    subtask = rng.randint(2, MAX_ID)
    executor = who["executor"]
    task = _message("dispatch", plan.conv, plan.turn + 1, plan.dst, executor, GOAL_ID=goal_id, TASK_ID=subtask,
                    PARENT_TASK_ID=cast.task, PRIORITY=priority)
    add("dispatch", plan, task, executor=executor, subtask=subtask)
    for attempt in range(MAX_ATTEMPTS):
        choice = rng.random()
        if choice < 0.1:
            add("busy", task, _reply("busy", task, **_ids(task)))
            return out
        if choice < 0.2:
            add("accept", task, _reply("accept", task, **_ids(task)))
            return out
        if choice < 0.35:
            code = rng.choice(ERROR_CODES)
            report = add("error", task, _reply("error", task, **_ids(task), ERROR_CODE=code), error_code=code)
            outcome, result = "error", None
        else:
            outcome, result = rng.choice(STATUSES), rng.randint(1, MAX_ID)
            report = add("report", task, _reply("report", task, f"exec_{outcome}", **_ids(task), RESULT_ID=result,
                                                STATUS=outcome), outcome=outcome, result=result)
        score, verdict = CRITIC_RULE[outcome]
        evaluation = add("evaluate", report,
                         _message("evaluate", report.conv, report.turn + 1, who["critic"], report.dst, verdict,
                                  **_ids(report), RESULT_ID=result, SCORE=score),
                         me_default=cast.defaults)
        if verdict != "eval_retry":
            move = "close" if verdict == "eval_pass" else "abort"
            add(move, evaluation, _reply(move, evaluation, **_ids(evaluation)), executor=executor)
            return out
        if attempt == MAX_ATTEMPTS - 1:
            return out  # the generator stops here; the protocol would go on retrying
        task = add("retry", evaluation,
                   _message("retry", evaluation.conv, evaluation.turn + 1, evaluation.dst, executor,
                            **_ids(evaluation)),
                   executor=executor)
    return out
