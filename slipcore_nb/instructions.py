"""Instruction wording: many ways to say the same exchange, and a held-out set of ways.

A model trained on one template per role learns the template, not the protocol (it answered the
guide's own example prompt with 0 % valid nSLIP). Here every instruction is composed from pools:
a preamble, who you are (with or without your id), the incoming message under some label, the goal,
the facts of the situation (ids to use, the outcome, an error code...) and the request to answer, in
varying order. Every pool has a ``train`` and an ``unseen`` part: the training data uses only the first,
the ``eval_unseen`` split only the second, so that split measures wording the model never saw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .conversations import DEFAULT_IDS, DEFAULT_TASK, MOVES, Exchange
from .protocol import encode, to_base62


@dataclass(frozen=True)
class Pool:
    """Phrasings used in training and phrasings kept for the unseen-wording split only."""

    train: tuple[str, ...]
    unseen: tuple[str, ...]

    def pick(self, rng: random.Random, unseen: bool) -> str:
        return rng.choice(self.unseen if unseen else self.train)


PREAMBLES = Pool(
    ("", "", "", "", "You receive nSLIP messages and a goal registry.",
     "Agents talk in nSLIP: @a<act>|f<frame>|c<conv>|S<src>|d<dst>|T<turn>|<slots>#.",
     "Messages use SLIPCore's nSLIP wire format: one line from @ to #, base62 numbers, quoted strings.",
     "You are part of a SLIPCore multi-agent system."),
    ("", "", "All agent traffic is compact nSLIP (@...#), one message per line.",
     "This team of agents coordinates through the SLIPCore protocol."),
)
INTROS = Pool(
    ("You are the {role} agent (id {me}).", "You are {role} agent {me}.", "Role: {role}. Your agent id is {me}.",
     "Agent {me}, you are the {role}.", "[{role} #{me}]", "You act as the {role}; your id is {me}.",
     "As the {role} (S={me}), answer below.", "{Role} agent, id={me}.", "You are a {role} agent with id {me}.",
     "You: the {role}, agent {me}."),
    ("Acting as {role} agent {me}:", "Identity: {role}, number {me}.",
     "This is agent {me}, responsible for the {role} role."),
)
INTROS_NO_ID = Pool(
    ("You are the {role} agent.", "You are a {role} agent.", "Role: {role}.", "As the {role}, answer below.",
     "[{role}]", "You act as the {role}.", "{Role} agent here.", "You are the {role}."),
    ("Acting as the {role} agent:", "Identity: {role}.", "Your job on this team: {role}."),
)
INCOMING = Pool(
    ("Incoming message:\n{message}", "Current message: {message}", "Message received: {message}",
     "Inbox:\n{message}", "You received {message}", "Last message: {message}", "{message}",
     "Input: {message}", "The {sender} wrote:\n{message}", "Message from the {sender}: {message}"),
    ("Latest message on the wire: {message}", "New nSLIP in: {message}", ">> {message}",
     "Here is what the {sender} sent you:\n{message}"),
)
GOALS = Pool(
    ("Goal[{goal_id}]: {goal_text}.", "Goal[{goal_id}]: {goal_text}", "Goal {goal_id}: {goal_text}.",
     "Goal id {goal_id} - {goal_text}.", "Goal #{goal_id}: {goal_text}", "The goal (g={goal_id}): {goal_text}."),
    ("Objective {goal_id}: {goal_text}.", "G[{goal_id}] {goal_text}", "Working on goal {goal_id}, \"{goal_text}\"."),
)
ASKS = Pool(
    ("Respond with nSLIP.", "Respond with one nSLIP message.", "Reply with a single nSLIP line.",
     "Answer in nSLIP only.", "Output the nSLIP message.", "Respond with a {act}/{frame} nSLIP message.",
     "Send your {act} as nSLIP.", "Write the reply in nSLIP.", "What do you send? nSLIP only."),
    ("Give your answer as exactly one nSLIP message.", "Emit nSLIP, nothing else.",
     "Return the {act} ({frame}) message in nSLIP."),
)

# Facts per move. ``{...}`` names a fact; the ``*_no_ids`` and ``*_task_only`` pools leave SLIPCore's defaults unsaid.
FACTS: dict[str, Pool] = {
    "open": Pool(
        ("Open conversation c={conv} and delegate the goal to the planner agent (id {planner}) as task k={task}.",
         "Start conversation {conv}: give the goal to planner {planner} as task {task}.",
         "Conversation id: {conv}. Planner: agent {planner}. Task id: {task}.",
         "Assign it as task {task} to the planner, agent {planner}, in a new conversation {conv}.",
         "Send this goal to agent {planner} (the planner) as task #{task} of conversation #{conv}.",
         "c={conv} planner={planner} task={task}",
         "Delegate to planner {planner}; conversation {conv}; task {task}."),
        ("Kick off conversation {conv} by handing task {task} to planner agent {planner}.",
         "Please route it to the planning agent {planner}, using conversation {conv} and task number {task}."),
    ),
    "open_task_only": Pool(
        ("Delegate it to the planner as task {task}.", "Task id: {task}. Hand it to the planner.",
         "Open a conversation and give the planner task k={task}."),
        ("Give it to the planner under task number {task}.",),
    ),
    "open_no_ids": Pool(
        ("Delegate the goal to the planner.", "Send it to the planner as a new task.",
         "Open a conversation and hand the goal to the planner."),
        ("Ask the planner to take this goal on.",),
    ),
    "priority": Pool(
        ("Priority {priority}.", "(priority {priority})", "q={priority}.", "Use priority {priority}."),
        ("Urgency level: {priority}.",),
    ),
    "ask": Pool(
        ("Before planning you need to know {question}.", "Open question: {question}?",
         "You cannot plan yet: it is unclear {question}.", "Ask first: {question}."),
        ("Missing detail: {question}.",),
    ),
    "decline": Pool(
        ("You cannot take this task: {reason}.", "Decline it: {reason}.", "Note: {reason}, so refuse the task."),
        ("Unfortunately {reason}; turn it down.",),
    ),
    "commit": Pool(
        ("The task is small: do it yourself instead of planning.", "No plan needed, you will do it directly.",
         "Commit to doing it yourself."),
        ("It's trivial, so just take it on yourself.",),
    ),
    "answer": Pool(
        ("Answer the question: {answer}.", "The answer is: {answer}.", "Reply with this information: {answer}."),
        ("Tell them: {answer}.",),
    ),
    "dispatch": Pool(
        ("Hand the plan to executor {executor} as subtask {subtask}.", "Executor: agent {executor}. Subtask id: {subtask}.",
         "Assign it to the executor (id {executor}) as task k={subtask}.",
         "Dispatch subtask #{subtask} to agent {executor}, the executor."),
        ("Pass the work on to executing agent {executor}, numbered as subtask {subtask}.",),
    ),
    "dispatch_no_ids": Pool(
        ("Hand the plan to the executor as subtask {subtask}.", "Subtask id for the executor: {subtask}."),
        ("Send it to the executor under subtask {subtask}.",),
    ),
    "report": Pool(
        ("Outcome: {outcome}, result stored as R[{result}].", "Result R[{result}]: {outcome}.",
         "You finished: {outcome}; the result id is {result}.", "Status: {outcome}. Result id r={result}."),
        ("What happened: {outcome} (result {result}).",),
    ),
    "error": Pool(
        ("It stopped with error {code}.", "Error code: {code}.", "Execution crashed: error {code}.",
         "The run failed with error code {code}."),
        ("Fault raised: {code}.",),
    ),
    "busy": Pool(
        ("You are busy with another task and cannot take it.", "Your queue is full: refuse it.",
         "You cannot start this now, you are busy."),
        ("No free capacity right now.",),
    ),
    "accept": Pool(
        ("You have started on it; no result yet.", "Work has begun, nothing to report yet.",
         "Take it: you are starting now."),
        ("You're on it but not finished.",),
    ),
    "executor": Pool(
        ("The executor is agent {executor}.", "Executor id: {executor}.", "(executor = {executor})"),
        ("Executor on this job: {executor}.",),
    ),
}
OUTCOMES = {
    "done": Pool(("all steps completed", "finished and verified", "deployed without issues", "done"),
                 ("everything worked",)),
    "partial": Pool(("finished with open issues", "partly completed", "done except one step", "partial"),
                    ("half of it landed",)),
    "failed": Pool(("could not complete", "rolled back after a failure", "tests kept failing", "failed"),
                   ("it did not work out",)),
}
QUESTIONS = Pool(("which environment to deploy to", "what the latency budget is", "who owns the component",
                  "whether downtime is allowed", "which version to target"), ("what the rollback plan is",))
REASONS = Pool(("you are at capacity", "the goal is outside your scope", "your queue is full"),
               ("another team owns this",))
ANSWERS = Pool(("staging first", "under 200 ms", "the platform team", "no downtime", "the latest release"),
               ("roll back to the previous build",))
SENDER_ROLE = {"open": None, "plan": "coordinator", "ask": "coordinator", "decline": "coordinator",
               "commit": "coordinator", "answer": "planner", "dispatch": "planner", "accept": "coordinator",
               "busy": "coordinator", "report": "coordinator", "error": "coordinator", "evaluate": "executor",
               "close": "critic", "retry": "critic", "abort": "critic"}


def _own_id_is_implied(exchange: Exchange) -> bool:
    """True where the instruction may leave out the agent's own id: the message names it, or it is the default."""
    if exchange.incoming is not None and exchange.move != "evaluate":
        return exchange.incoming.dst == exchange.target.src
    return exchange.target.src == DEFAULT_IDS[exchange.role] and (
        exchange.facts.get("defaults") or exchange.facts.get("me_default"))


def _facts_text(exchange: Exchange, rng: random.Random, unseen: bool) -> str:
    """The situation's facts in words: ids to use, the outcome, the question... ("" where none)."""
    facts, move = exchange.facts, exchange.move
    b62 = {key: to_base62(value) for key, value in facts.items() if type(value) is int and key != "goal_id"}
    if move == "open":
        if not facts["defaults"]:
            pool = "open"
        else:
            pool = "open_no_ids" if facts["task"] == DEFAULT_TASK else "open_task_only"
        text = FACTS[pool].pick(rng, unseen).format(**b62)
        if not facts["priority_default"]:
            text += " " + FACTS["priority"].pick(rng, unseen).format(**b62)
        return text
    if move in ("dispatch", "close", "retry", "abort"):
        if move == "dispatch":
            pool = "dispatch_no_ids" if facts["defaults"] else "dispatch"
            return FACTS[pool].pick(rng, unseen).format(**b62)
        return "" if facts["defaults"] else FACTS["executor"].pick(rng, unseen).format(**b62)
    if move == "report":
        outcome = OUTCOMES[facts["outcome"]].pick(rng, unseen)
        return FACTS["report"].pick(rng, unseen).format(outcome=outcome, result=b62["result"])
    if move == "error":
        return FACTS["error"].pick(rng, unseen).format(code=facts["error_code"])
    fillers = {"ask": ("question", QUESTIONS), "decline": ("reason", REASONS), "answer": ("answer", ANSWERS)}
    if move in fillers:
        name, pool = fillers[move]
        return FACTS[move].pick(rng, unseen).format(**{name: pool.pick(rng, unseen)})
    if move in ("commit", "busy", "accept"):
        return FACTS[move].pick(rng, unseen)
    return ""


def instruction(exchange: Exchange, rng: random.Random, unseen: bool = False) -> str:
    """The exchange in words drawn from the ``train`` (or ``unseen``) pools."""
    role, spec = exchange.role, MOVES[exchange.move]
    fields = {"role": role, "Role": role.capitalize(), "me": to_base62(exchange.target.src),
              "act": spec.act.name, "frame": spec.frame.name}
    states_id = not _own_id_is_implied(exchange) or rng.random() < 0.5
    intro = (INTROS if states_id else INTROS_NO_ID).pick(rng, unseen).format(**fields)
    goal = GOALS.pick(rng, unseen).format(goal_id=to_base62(exchange.facts["goal_id"]),
                                          goal_text=exchange.facts["goal_text"])
    parts = [goal]
    if exchange.incoming is not None:
        incoming = INCOMING.pick(rng, unseen).format(message=encode(exchange.incoming),
                                                     sender=SENDER_ROLE[exchange.move])
        parts.insert(rng.randrange(2), incoming)
    facts = _facts_text(exchange, rng, unseen)
    if facts:
        parts.insert(rng.choice((0, len(parts))) if exchange.incoming is None else len(parts), facts)
    ask = ASKS.pick(rng, unseen).format(**fields)
    preamble = PREAMBLES.pick(rng, unseen)
    lines = [text for text in (preamble, intro, *parts, ask) if text]
    return (" " if rng.random() < 0.3 else "\n").join(lines)


# The served form's facts per move: nSLIP slot letters for values, agents by role, a word where the
# long form describes a situation ("you are busy"). Moves without an entry state nothing: the incoming
# message decides (plan, evaluate) as in the long form.
SERVED_FACTS = {
    "open": "planner={planner} c={conv} k={task} q={priority}", "ask": "ask", "decline": "decline",
    "commit": "commit", "answer": "answer", "dispatch": "executor={executor} k={subtask}", "accept": "accept",
    "busy": "busy", "report": "u={outcome} r={result}", "error": "e={error_code}",
    "close": "executor={executor}", "retry": "executor={executor}", "abort": "executor={executor}",
}


def served_instruction(exchange: Exchange) -> str:
    """The short form for served agents, e.g. ``executor 2 in=@a3|...# u=partial r=LE``.

    A served CPU spends compute on every prompt token, and the long wordings cost ~90 tokens a
    message; this form says the same facts in ~50 (role, own id, the goal id where no message
    carries it, the incoming message, the facts), so agents that use it get more messages per
    second. It is one fixed format, trained alongside the long wordings, so it needs no rng.
    """
    facts = {key: to_base62(value) if type(value) is int else value for key, value in exchange.facts.items()}
    parts = [exchange.role, to_base62(exchange.target.src)]
    if exchange.incoming is None:
        parts.append(f"g={facts['goal_id']}")
    else:
        parts.append(f"in={encode(exchange.incoming)}")
    if exchange.move in SERVED_FACTS:
        parts.append(SERVED_FACTS[exchange.move].format(**facts))
    return " ".join(parts)


# The guide's one-line style, "You are a planner agent. Goal[1]: Add rate limiting. Respond with nSLIP.",
# for every move: ids as Name[value], as the guide writes the goal's; held out, never in training.
GUIDE_FACTS = {
    "open": "Conversation[{conv}]. Planner[{planner}]. Task[{task}].", "ask": "Question: {question}?",
    "decline": "Decline: {reason}.", "commit": "Do it yourself.", "answer": "Answer: {answer}.",
    "dispatch": "Executor[{executor}]. Subtask[{subtask}].", "accept": "Started, no result yet.",
    "busy": "You are busy.", "report": "Outcome: {outcome}. Result[{result}].", "error": "Error: {error_code}.",
    "close": "Executor[{executor}].", "retry": "Executor[{executor}].", "abort": "Executor[{executor}].",
}


def guide_instruction(exchange: Exchange, rng: random.Random) -> str:
    """The exchange in the guide's one-line style: role (with its id where nothing implies it), the
    goal as ``Goal[N]``, the facts as ``Name[value]`` (left out where SLIPCore's defaults apply, as the
    guide's own prompt leaves them), the incoming message, then "Respond with nSLIP."."""
    role, facts = exchange.role, exchange.facts
    article = "an" if role[0] in "aeiou" else "a"
    states_id = not _own_id_is_implied(exchange) or rng.random() < 0.5
    parts = [f"You are {role} agent {to_base62(exchange.me)}." if states_id else f"You are {article} {role} agent.",
             f"Goal[{to_base62(facts['goal_id'])}]: {facts['goal_text']}."]
    values = {key: to_base62(value) if type(value) is int else value for key, value in facts.items()}
    values.update(question=QUESTIONS.pick(rng, True), reason=REASONS.pick(rng, True), answer=ANSWERS.pick(rng, True))
    defaults = facts.get("defaults") and exchange.move in ("open", "close", "retry", "abort")
    if exchange.move in GUIDE_FACTS and not defaults:
        parts.append(GUIDE_FACTS[exchange.move].format(**values))
    elif exchange.move == "open" and facts["task"] != DEFAULT_TASK:
        parts.append(f"Task[{values['task']}].")
    if exchange.move == "open" and not facts["priority_default"]:
        parts.append(f"Priority[{values['priority']}].")
    if exchange.incoming is not None:
        parts.append(f"Incoming: {encode(exchange.incoming)}")
    parts.append("Respond with nSLIP.")
    return " ".join(parts)
