"""Synthetic SLIPCore conversations: coordinator -> planner -> executor -> critic.

One conversation is four turns about one goal:

1. coordinator -> planner   REQUEST/TASK        (opens the conversation, assigns goal and task ids)
2. planner -> coordinator   PROPOSE/PLAN        (answers the request)
3. executor -> coordinator  INFORM/OBSERVATION  (reports the outcome of the plan)
4. critic -> coordinator    EVAL/EVALUATION     (scores the reported result)

Each turn becomes one training example: the role's instruction (incoming message + goal text)
and the one nSLIP line it must answer. Fields the protocol determines (act, frame, conv, src, dst,
turn, ids, status from the stated outcome, score band from the incoming status) always follow
from the instruction; free fields keep to the small vocabularies below so evaluation can check
them. Ids are drawn independently, so a model must copy them from the input rather than guess.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .protocol import START, Act, Frame, Message, Slot, decode, encode, to_base62

ROLES: tuple[str, ...] = ("coordinator", "planner", "executor", "critic")


@dataclass(frozen=True)
class RoleSpec:
    """What a role answers with: its act/frame, the turn it speaks in, the tags it may use."""

    act: Act
    frame: Frame
    turn: int
    tags: tuple[str, ...]


ROLE_SPECS: dict[str, RoleSpec] = {
    "coordinator": RoleSpec(Act.REQUEST, Frame.TASK, 1, ("new_task", "delegate")),
    "planner": RoleSpec(Act.PROPOSE, Frame.PLAN, 2, ("plan_v1", "plan_v2", "plan_v3")),
    "executor": RoleSpec(Act.INFORM, Frame.OBSERVATION, 3, ("exec_done", "exec_partial", "exec_failed")),
    "critic": RoleSpec(Act.EVAL, Frame.EVALUATION, 4, ("eval_pass", "eval_retry", "eval_fail")),
}

# Free-field vocabularies and ranges (documented in the README; checked by evaluate).
PRIORITIES = range(1, 6)
STATUS_CODES = {"done": 1, "partial": 2, "failed": 3}
SCORE_BANDS = {1: range(7, 10), 2: range(4, 7), 3: range(0, 4)}  # incoming status -> critic score
CRITIC_TAG_BY_STATUS = {1: "eval_pass", 2: "eval_retry", 3: "eval_fail"}
EXECUTOR_TAG_BY_STATUS = {code: f"exec_{name}" for name, code in STATUS_CODES.items()}
MAX_ID = 62 * 62 - 1  # ids take one or two base62 digits
MAX_AGENT_ID = 35  # agent ids are one digit: 0-9, A-Z

# Goal texts: templates x verbs x features x components (thousands of distinct goals).
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

OUTCOME_PHRASES = {
    "done": ("all steps completed", "finished and verified", "deployed without issues"),
    "partial": ("finished with open issues", "partly completed", "done except one step"),
    "failed": ("blocked by an error", "could not complete", "rolled back after a failure"),
}

INSTRUCTIONS = {
    "coordinator": (
        "You are the coordinator agent (id {me}). Open conversation c={conv} and delegate the goal "
        "below to the planner agent (id {planner}) as task k={task}.\n{goal}\n"
        "Respond with one nSLIP message."
    ),
    "planner": (
        "You are the planner agent (id {me}). Incoming message:\n{incoming}\n{goal}\n"
        "Reply to the sender with a plan as one nSLIP message."
    ),
    "executor": (
        "You are the executor agent (id {me}). Incoming plan:\n{incoming}\n{goal}\n"
        "Outcome: {outcome}, result stored as R[{result}].\n"
        "Report the outcome to the coordinator as one nSLIP message."
    ),
    "critic": (
        "You are the critic agent (id {me}). Incoming report:\n{incoming}\n{goal}\n"
        "Evaluate the result for the coordinator as one nSLIP message."
    ),
}


def all_goal_texts() -> list[str]:
    """Every goal text the generator can use, in a fixed order."""
    return [
        template.format(verb=verb, feature=feature, component=component)
        for template in GOAL_TEMPLATES
        for verb in VERBS
        for feature in FEATURES
        for component in COMPONENTS
    ]


def goal_line(goal_id: int, text: str) -> str:
    return f"Goal[{to_base62(goal_id)}]: {text}"


def conversation(rng: random.Random, goal_text: str) -> list[dict[str, str]]:
    """The four examples ``{"role", "input", "target"}`` of one conversation about ``goal_text``."""
    coordinator, planner, executor, critic = rng.sample(range(MAX_AGENT_ID + 1), 4)
    conv, goal_id, task_id, result_id = (rng.randint(1, MAX_ID) for _ in range(4))
    priority = rng.choice(PRIORITIES)
    outcome = rng.choice(tuple(STATUS_CODES))
    status = STATUS_CODES[outcome]
    score = rng.choice(SCORE_BANDS[status])
    ids = {Slot.GOAL_ID: goal_id, Slot.TASK_ID: task_id}

    def reply(role: str, src: int, dst: int, **slots) -> Message:
        spec = ROLE_SPECS[role]
        return Message(conv=conv, turn=spec.turn, src=src, dst=dst, act=spec.act, frame=spec.frame,
                       slots={**ids, **{Slot[name]: value for name, value in slots.items()}})

    request = reply("coordinator", coordinator, planner, PRIORITY=priority,
                    TAG=rng.choice(ROLE_SPECS["coordinator"].tags))
    plan = reply("planner", planner, coordinator, PRIORITY=priority,
                 TAG=rng.choice(ROLE_SPECS["planner"].tags))
    report = reply("executor", executor, coordinator, RESULT_ID=result_id, STATUS=status,
                   TAG=EXECUTOR_TAG_BY_STATUS[status])
    evaluation = reply("critic", critic, coordinator, RESULT_ID=result_id, SCORE=score,
                       TAG=CRITIC_TAG_BY_STATUS[status])

    goal = goal_line(goal_id, goal_text)
    b62 = to_base62
    inputs = {
        "coordinator": INSTRUCTIONS["coordinator"].format(
            me=b62(coordinator), conv=b62(conv), planner=b62(planner), task=b62(task_id), goal=goal),
        "planner": INSTRUCTIONS["planner"].format(me=b62(planner), incoming=encode(request), goal=goal),
        "executor": INSTRUCTIONS["executor"].format(
            me=b62(executor), incoming=encode(plan), goal=goal,
            outcome=rng.choice(OUTCOME_PHRASES[outcome]), result=b62(result_id)),
        "critic": INSTRUCTIONS["critic"].format(me=b62(critic), incoming=encode(report), goal=goal),
    }
    targets = dict(zip(ROLES, (request, plan, report, evaluation)))
    return [{"role": role, "input": inputs[role], "target": encode(targets[role])} for role in ROLES]



def incoming_message(instruction: str) -> Message | None:
    """The nSLIP message an instruction quotes on its own line (None for the coordinator)."""
    for line in instruction.splitlines():
        if line.startswith(START):
            return decode(line)
    return None
