"""Synthetic SLIPCore conversations: what each agent answers, to whom, with which fields.

This module holds the protocol's side of the dataset and no wording: a conversation is a list of
:class:`Exchange` (the message an agent received, the facts it was told, the message it must send).
:mod:`slipcore_nb.instructions` turns each exchange into an instruction in one of many wordings.

The conversation grammar (docs/dataset.md's table is :func:`grammar_table`, checked by a test):

- A reply goes **from the addressee of the incoming message to its sender**, in the same
  conversation, with turn = incoming turn + 1, copying the goal ``g``, task ``k`` and parent ``p`` ids.
  Three moves are not replies: the critic reads the executor's report to the coordinator and sends its
  EVAL to that coordinator, and the coordinator hands a plan (a new subtask) or a retry to the executor.
- The coordinator opens (turn 1, REQUEST/TASK to the planner). The planner PROPOSEs a plan, or ASKs
  a question (the coordinator INFORMs, the planner then proposes), or REJECTs the task, or COMMITs to
  do it itself. The coordinator hands the plan to the executor as a subtask ``k`` with parent ``p``.
  The executor ACCEPTs it, REJECTs it (busy), reports the outcome (INFORM/OBSERVATION with status
  ``u"done"``, ``u"partial"`` or ``u"failed"``) or reports an ERROR with its code ``e``. In SLIPCore's
  reference chain (REQUEST -> PROPOSE -> INFORM -> EVAL) there is no dispatch: the executor reads the
  planner's PROPOSE/PLAN to the coordinator and reports to that coordinator; the table answers it too.
  The critic EVALuates a report; the coordinator then closes (META/CONTROL), re-issues the subtask for a
  retry (turns keep counting) or aborts.
- Values an instruction does not state take the defaults of SLIPCore's own examples: coordinator 0,
  planner 1, executor 2, critic 3, conversation 1, task 1, priority 3. So the guide's prompt "You are a
  planner agent. Goal[1]: ..." has one right answer, ``@a4|f1|c1|S1|d0|T2|g1|k1|q3|t"plan_v1"#``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .protocol import SLOT_ORDER, Act, Frame, Message, Slot

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


Pair = tuple[Act, Frame]
REQUEST_TASK: Pair = (Act.REQUEST, Frame.TASK)
PROPOSE_PLAN: Pair = (Act.PROPOSE, Frame.PLAN)
COPIED: tuple[tuple[Slot, str], ...] = tuple((slot, "in") for slot in (Slot.GOAL_ID, Slot.TASK_ID, Slot.PARENT_TASK_ID))
WITH_PRIORITY = (*COPIED, (Slot.PRIORITY, "in"))


@dataclass(frozen=True)
class Move:
    """One kind of message: who sends it and to whom, act/frame/tags, what it answers, and where every
    field's value comes from. This table is the protocol: the dataset's targets (which evaluation scores
    against) and the state grammar (:mod:`slipcore_nb.state_grammar`) are both computed from it by
    :func:`fixed_fields`.

    ``answers``: the act/frame pairs it answers (``None``: it needs no incoming message).
    ``addressing``: ``reply`` (from the incoming's addressee back to its sender), ``forward`` (from the
    incoming's addressee on to the agent of role ``to``, a fact), ``overhear`` (from this agent to the
    incoming's addressee: the critic reads a report sent to the coordinator) or ``open`` (turn 1, ids from
    the facts); ``overhears``: answered pairs addressed as ``overhear`` whatever ``addressing`` says (the
    executor that reads a plan in SLIPCore's reference chain). ``after_tags``: the incoming tags it follows
    (empty: any). ``slots``: each slot it carries and its source: ``in`` (the incoming's same slot, where it
    has one), ``in:k`` (the incoming's task id), ``fact:<name>`` (what the agent was told; where it was not,
    the model's choice) or ``tag`` (the model's choice, tied to the tag by :data:`BY_TAG`). ``needs``: facts
    the sender must hold to make the move at all (an executor reports only a result it has); ``unless``:
    facts that rule it out (an executor holding an outcome no longer answers that it started or is busy).
    """

    role: str
    to: str  # the role it is sent to
    act: Act
    frame: Frame
    answers: tuple[Pair | None, ...]
    tags: tuple[str, ...]
    when: str
    addressing: str = "reply"
    after_tags: tuple[str, ...] = ()
    slots: tuple[tuple[Slot, str], ...] = COPIED
    needs: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    overhears: tuple[Pair, ...] = ()

    def addressing_of(self, pair: Pair | None) -> str:
        """How the answer to ``pair`` (``None``: nothing received) is addressed."""
        return "overhear" if pair in self.overhears else self.addressing


OUTCOME_FACTS = ("result", "error_code")  # what an executor holds once its run has ended

MOVES: dict[str, Move] = {
    "open": Move("coordinator", "planner", Act.REQUEST, Frame.TASK, (None,), ("new_task",), "a goal to delegate",
                 addressing="open", slots=((Slot.GOAL_ID, "fact:goal_id"), (Slot.TASK_ID, "fact:task"),
                                           (Slot.PRIORITY, "fact:priority"))),
    "plan": Move("planner", "coordinator", Act.PROPOSE, Frame.PLAN, (REQUEST_TASK, (Act.INFORM, Frame.TASK), None),
                 ("plan_v1",), "the task can be planned", slots=WITH_PRIORITY),
    "ask": Move("planner", "coordinator", Act.ASK, Frame.TASK, (REQUEST_TASK,), ("need_info",),
                "a question blocks the plan", slots=WITH_PRIORITY),
    "decline": Move("planner", "coordinator", Act.REJECT, Frame.TASK, (REQUEST_TASK,), ("declined",),
                    "it cannot take the task"),
    "commit": Move("planner", "coordinator", Act.COMMIT, Frame.TASK, (REQUEST_TASK,), ("committed",),
                   "the task is small enough to do itself", slots=WITH_PRIORITY),
    "answer": Move("coordinator", "planner", Act.INFORM, Frame.TASK, ((Act.ASK, Frame.TASK),), ("answer",),
                   "the planner asked", slots=WITH_PRIORITY),
    "dispatch": Move("coordinator", "executor", Act.REQUEST, Frame.TASK, (PROPOSE_PLAN,), ("execute",),
                     "a plan arrived (to the executor, new subtask k, parent p)", addressing="forward",
                     slots=((Slot.GOAL_ID, "in"), (Slot.TASK_ID, "fact:subtask"), (Slot.PARENT_TASK_ID, "in:k"),
                            (Slot.PRIORITY, "in"))),
    "accept": Move("executor", "coordinator", Act.ACCEPT, Frame.TASK, (REQUEST_TASK,), ("accepted",),
                   "it started, no result yet", unless=OUTCOME_FACTS),
    "busy": Move("executor", "coordinator", Act.REJECT, Frame.TASK, (REQUEST_TASK,), ("busy",), "it is busy",
                 unless=OUTCOME_FACTS),
    "report": Move("executor", "coordinator", Act.INFORM, Frame.OBSERVATION, (REQUEST_TASK, PROPOSE_PLAN),
                   tuple(f"exec_{status}" for status in STATUSES),
                   "it has an outcome (u = status, r = result); of a plan, to the plan's addressee",
                   slots=(*COPIED, (Slot.RESULT_ID, "fact:result"), (Slot.STATUS, "tag")), needs=("result",),
                   overhears=(PROPOSE_PLAN,)),
    "error": Move("executor", "coordinator", Act.ERROR, Frame.OBSERVATION, (REQUEST_TASK, PROPOSE_PLAN),
                  ("exec_error",), "it hit an error (e = code); of a plan, to the plan's addressee",
                  slots=(*COPIED, (Slot.ERROR_CODE, "fact:error_code")), needs=("error_code",),
                  overhears=(PROPOSE_PLAN,)),
    "evaluate": Move("critic", "coordinator", Act.EVAL, Frame.EVALUATION,
                     ((Act.INFORM, Frame.OBSERVATION), (Act.ERROR, Frame.OBSERVATION)),
                     ("eval_pass", "eval_retry", "eval_fail"), "a report arrived (to its coordinator)",
                     addressing="overhear", slots=(*COPIED, (Slot.RESULT_ID, "in"), (Slot.SCORE, "tag"))),
    "close": Move("coordinator", "critic", Act.META, Frame.CONTROL, ((Act.EVAL, Frame.EVALUATION),), ("close",),
                  "the verdict is eval_pass", after_tags=("eval_pass",)),
    "retry": Move("coordinator", "executor", Act.REQUEST, Frame.TASK, ((Act.EVAL, Frame.EVALUATION),), ("retry",),
                  "the verdict is eval_retry (to the executor, same k and p)", addressing="forward",
                  after_tags=("eval_retry",)),
    "abort": Move("coordinator", "critic", Act.META, Frame.CONTROL, ((Act.EVAL, Frame.EVALUATION),), ("abort",),
                  "the verdict is eval_fail", after_tags=("eval_fail",)),
}

# The values a ``tag``-sourced slot may take with each tag: a report's status is its tag's, and the
# critic's score is the one its rule pairs with the verdict (a failed run 2, an error 0).
BY_TAG: dict[Slot, dict[str, tuple[int | str, ...]]] = {
    Slot.STATUS: {f"exec_{status}": (status,) for status in STATUSES},
    Slot.SCORE: {verdict: tuple(score for score, named in CRITIC_RULE.values() if named == verdict)
                 for verdict in ("eval_pass", "eval_retry", "eval_fail")},
}

# Every tag belongs to one move: a message's tag says which situation it answers (per-move scores).
MOVE_OF_TAG: dict[str, str] = {tag: name for name, move in MOVES.items() for tag in move.tags}


def _received(move: Move) -> str:
    names = ["none" if pair is None else f"{pair[0].name}/{pair[1].name}" for pair in move.answers]
    if names == ["none"]:
        return "—"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def grammar_table() -> str:
    """:data:`MOVES` as the markdown table docs/dataset.md shows: which act answers which, and when."""
    rows = ["| role | receives | answers with | when | tag `t` |", "|---|---|---|---|---|"]
    for move in MOVES.values():
        tags = ", ".join(f"`{tag}`" for tag in move.tags)
        rows.append(f"| {move.role} | {_received(move)} | {move.act.name}/{move.frame.name} | {move.when} | {tags} |")
    return "\n".join(rows)


class ProtocolError(ValueError):
    """A state the move table has no answer for: an unknown role, or a message no move of the role answers."""


def legal_moves(role: str, incoming: Message | None, facts: dict | None = None) -> list[str]:
    """The moves ``role`` may make on receiving ``incoming`` (``None``: nothing received), in table order;
    with ``facts``, only those its facts allow (``Move.needs`` held, ``Move.unless`` not)."""
    if role not in ROLES:
        raise ProtocolError(f"role must be one of {ROLES}, got {role!r}")
    pair = None if incoming is None else (incoming.act, incoming.frame)
    tag = None if incoming is None else incoming.slots.get(Slot.TAG)
    moves = [name for name, move in MOVES.items()
             if move.role == role and pair in move.answers and (not move.after_tags or tag in move.after_tags)]
    if facts is None:
        return moves
    return [name for name in moves if all(facts.get(key) is not None for key in MOVES[name].needs)
            and all(facts.get(key) is None for key in MOVES[name].unless)]


def implied_request(me: int, goal_id: int) -> Message:
    """What a planner given only a goal answers (the guide's prompt): SLIPCore's default opening REQUEST."""
    facts = {"goal_id": goal_id, "conv": DEFAULT_CONV, "planner": me, "task": DEFAULT_TASK,
             "priority": DEFAULT_PRIORITY}
    return message("open", None, DEFAULT_IDS["coordinator"], facts)


@dataclass(frozen=True)
class Fixed:
    """A move's message as far as the protocol fixes it; ``None`` marks a value that is the sender's choice.

    ``header``: conv, turn, src, dst. ``slots``: every slot the message carries, in :class:`Slot` order.
    """

    header: dict[str, int | None]
    slots: dict[Slot, int | str | None]


def fixed_fields(move: str, incoming: Message | None, me: int, facts: dict) -> Fixed:
    """What the protocol fixes when agent ``me`` makes ``move`` on receiving ``incoming`` and told ``facts``.

    A value neither the incoming message nor a fact gives (a fact left out, a report's status, the
    critic's score) is ``None``: the sender's own choice.
    """
    spec = MOVES[move]
    addressing = spec.addressing_of(None if incoming is None else (incoming.act, incoming.frame))
    if incoming is None and None not in spec.answers:
        raise ProtocolError(f"{move} answers {_received(spec)}, and no message was received")
    if incoming is None and addressing != "open":
        if "goal_id" not in facts:
            raise ProtocolError(f"{move} with no message received answers the implied opening, which needs "
                                "facts['goal_id']")
        incoming = implied_request(me, facts["goal_id"])
    if incoming is not None and addressing in ("reply", "forward") and incoming.dst != me:
        raise ProtocolError(f"{move}: the message received is addressed to agent {incoming.dst}, not to {me}")
    if addressing == "open":
        header = {"conv": facts.get("conv"), "turn": 1, "src": me, "dst": facts.get(spec.to)}
    else:
        src, dst = {"reply": (incoming.dst, incoming.src), "forward": (incoming.dst, facts.get(spec.to)),
                    "overhear": (me, incoming.dst)}[addressing]
        header = {"conv": incoming.conv, "turn": incoming.turn + 1, "src": src, "dst": dst}
    slots: dict[Slot, int | str | None] = {}
    for slot, source in spec.slots:
        if source == "in" and slot in incoming.slots:
            slots[slot] = incoming.slots[slot]
        elif source == "in:k" and Slot.TASK_ID in incoming.slots:
            slots[slot] = incoming.slots[Slot.TASK_ID]
        elif source.startswith("fact:"):
            slots[slot] = facts.get(source.removeprefix("fact:"))
        elif source == "tag":
            slots[slot] = None
    slots[Slot.TAG] = None
    return Fixed(header, dict(sorted(slots.items(), key=lambda item: SLOT_ORDER.index(item[0]))))


def message(move: str, incoming: Message | None, me: int, facts: dict, tag: str | None = None, **choices) -> Message:
    """The move's message: :func:`fixed_fields`, then the sender's choices (``tag``, default the move's
    first; slots by name, e.g. ``STATUS="done"``) where the protocol leaves one."""
    spec, fixed = MOVES[move], fixed_fields(move, incoming, me, facts)
    tag = tag or spec.tags[0]
    if tag not in spec.tags:
        raise ProtocolError(f"{move} takes a tag in {spec.tags}, got {tag!r}")
    missing = [name for name, value in fixed.header.items() if value is None]
    if missing:
        raise ProtocolError(f"{move}: no value for {missing} (a fact the agent was not told)")
    slots = {}
    for slot, value in fixed.slots.items():
        if slot is Slot.TAG:
            value = tag
        elif value is None:
            value = choices.get(slot.name)
            allowed = BY_TAG.get(slot, {}).get(tag)
            if value is None or (allowed is not None and value not in allowed):
                raise ProtocolError(f"{move} with tag {tag!r}: {slot.name} must be given"
                                    + (f" as one of {allowed}" if allowed else "") + f", got {value!r}")
        slots[slot] = value
    return Message(act=spec.act, frame=spec.frame, slots=slots, **fixed.header)


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

    @property
    def me(self) -> int:
        """The id of the agent that sends ``target``: what its runtime knows of itself."""
        return self.target.src


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


def conversation(rng: random.Random, goal_text: str) -> list[Exchange]:
    """One conversation about ``goal_text``: every message in it, each one an :class:`Exchange`.

    The world's choices (which move, the outcome, the ids) are drawn here; every message is then
    :func:`message` of its move, so the targets follow :data:`MOVES` and nothing else.
    """
    if not isinstance(rng, random.Random):
        raise TypeError(f"conversation needs rng=random.Random(seed) (the same seed, the same conversation), got {rng!r}")
    if not isinstance(goal_text, str) or not goal_text.strip() or any(ord(ch) < 0x20 for ch in goal_text):
        raise ValueError(f"goal_text must be one line of text, got {goal_text!r}")
    cast = _cast(rng)
    who = cast.agents
    goal_id = rng.choice((1, rng.randint(2, MAX_ID))) if cast.defaults else rng.randint(1, MAX_ID)
    priority = rng.choice(PRIORITIES) if rng.random() < 0.6 else DEFAULT_PRIORITY
    base = {"goal_id": goal_id, "goal_text": goal_text, "defaults": cast.defaults}
    out: list[Exchange] = []

    def add(move: str, incoming: Message | None, me: int, tag: str | None = None, choices: dict | None = None,
            **facts) -> Message:
        facts = {**base, **facts}
        target = message(move, incoming, me, facts, tag, **(choices or {}))
        out.append(Exchange(move, incoming, target, facts))
        return target

    if rng.random() < 0.3:  # the guide's style: a planner gets a goal and nothing else
        me = who["planner"] if rng.random() < 0.5 else DEFAULT_IDS["planner"]
        add("plan", None, me, me_default=me == DEFAULT_IDS["planner"])

    request = add("open", None, who["coordinator"], conv=cast.conv, planner=who["planner"], task=cast.task,
                  priority=priority, priority_default=priority == DEFAULT_PRIORITY)
    planner, coordinator = who["planner"], who["coordinator"]
    choice = rng.random()
    if choice < 0.08:
        add("decline", request, planner)
        return out
    if choice < 0.16:
        add("commit", request, planner)
        return out
    if choice < 0.32:
        asked = add("ask", request, planner)
        informed = add("answer", asked, coordinator)
        plan = add("plan", informed, planner)
    else:
        plan = add("plan", request, planner)

    subtask = rng.randint(2, MAX_ID)
    executor = who["executor"]
    task = add("dispatch", plan, coordinator, executor=executor, subtask=subtask)
    for attempt in range(MAX_ATTEMPTS):
        choice = rng.random()
        if choice < 0.1:
            add("busy", task, executor)
            return out
        if choice < 0.2:
            add("accept", task, executor)
            return out
        if choice < 0.35:
            code = rng.choice(ERROR_CODES)
            report = add("error", task, executor, error_code=code)
            outcome = "error"
        else:
            outcome, result = rng.choice(STATUSES), rng.randint(1, MAX_ID)
            report = add("report", task, executor, f"exec_{outcome}", {"STATUS": outcome}, outcome=outcome,
                         result=result)
        score, verdict = CRITIC_RULE[outcome]
        evaluation = add("evaluate", report, who["critic"], verdict, {"SCORE": score}, me_default=cast.defaults)
        if verdict != "eval_retry":
            add("close" if verdict == "eval_pass" else "abort", evaluation, coordinator, executor=executor)
            return out
        if attempt == MAX_ATTEMPTS - 1:
            return out  # the generator stops here; the protocol would go on retrying
        task = add("retry", evaluation, coordinator, executor=executor)
    return out
