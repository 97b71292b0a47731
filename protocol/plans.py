"""Plans: a dependency graph of steps, and the pure engine that decides what runs next.

A plan is steps with ids, each running a command (or a stored job) on a target, after the steps it
``depends_on``. Independent steps run concurrently; when a step fails, the steps that depend on it (directly or
not) are *skipped* unless it says ``on_failure: continue``. Cycles and unknown references are refused before
anything runs. Two formats are read: ours (``parse_plan``, from YAML or JSON) and gorchestrator's
(``from_gorch``: nodes plus an n x n adjacency matrix, row-major, where a 1 at row i, column j means node j runs
after node i).

A step may also wait for futures (``waits_for``: per-scenario keys, see ``server.futures``) besides its
dependencies, and declare the keys its command sets (``sets``); ``unproducible_keys`` finds the waits that nothing
could ever satisfy, so such a plan is refused before it runs. The waiting itself is the hub's business (a step
whose dependencies are done but whose keys are missing is ``WAITING``); the engine does not know about keys.

``PlanRun`` is the engine, with no I/O: the hub feeds it results and dispatches what it returns, so it can be
tested, persisted (``states``) and measured on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from protocol.errors import ErrorCode, IllegalTransition, ProtocolError
from protocol.order_bodies import SECRET_NAME, SHELLS

STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")  # a future's key (the hub's futures check it too)
MAX_STEPS = 1000


class PlanError(ProtocolError):
    """The plan is malformed: the message names the step and what is wrong (cycles name the cycle)."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(ErrorCode.INVALID_REQUEST, message, **details)


class StepState(StrEnum):
    PENDING = "pending"  # waiting for the steps it depends on
    WAITING = "waiting"  # its dependencies are done, its keys (waits_for) are not all set: not dispatched yet
    RUNNING = "running"  # dispatched
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"  # a step it depends on failed: never dispatched
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self not in (StepState.PENDING, StepState.WAITING, StepState.RUNNING)


class StepEvent(StrEnum):
    """What happens to a step: the engine's decisions (``PlanRun``) and the hub's (its plan runner)."""

    READY = "ready"  # the engine: the steps it depends on are all final, hand it out (RUNNING)
    KEYS_MISSING = "keys_missing"  # the hub: some keys it waits for are not set, so no orders go out yet
    KEYS_SET = "keys_set"  # the hub: its keys are all set now, its orders go out
    SUCCEED = "succeed"  # the hub: all its orders succeeded
    FAIL = "fail"  # the hub: one of its orders did not
    TIME_OUT = "time_out"  # the hub: its timeout passed, while its orders ran or while it waited for keys
    SKIP = "skip"  # the engine: a step it depends on failed (and skips its dependents)
    CANCEL = "cancel"  # the plan was cancelled


_P, _E = StepState, StepEvent
# WAITING is the hub's: the engine hands a ready step out as RUNNING and the hub holds it back while its keys are
# missing (stored so, a restarted hub waits on). Nothing leaves a final state: a duplicate report changes nothing.
STEP_TRANSITIONS: dict[tuple[StepState, StepEvent], StepState] = {
    (_P.PENDING, _E.READY): _P.RUNNING,
    (_P.PENDING, _E.SKIP): _P.SKIPPED,
    (_P.PENDING, _E.CANCEL): _P.CANCELLED,
    (_P.RUNNING, _E.KEYS_MISSING): _P.WAITING,
    (_P.RUNNING, _E.SUCCEED): _P.SUCCEEDED,
    (_P.RUNNING, _E.FAIL): _P.FAILED,
    (_P.RUNNING, _E.TIME_OUT): _P.TIMED_OUT,
    (_P.RUNNING, _E.CANCEL): _P.CANCELLED,
    (_P.WAITING, _E.KEYS_SET): _P.RUNNING,
    (_P.WAITING, _E.TIME_OUT): _P.TIMED_OUT,
    (_P.WAITING, _E.CANCEL): _P.CANCELLED,
}

# The outcome ``PlanRun.finished`` is told, and the event that records it.
OUTCOME_EVENTS: dict[StepState, StepEvent] = {
    _P.SUCCEEDED: _E.SUCCEED,
    _P.FAILED: _E.FAIL,
    _P.TIMED_OUT: _E.TIME_OUT,
    _P.SKIPPED: _E.SKIP,
    _P.CANCELLED: _E.CANCEL,
}


def advance(state: StepState, event: StepEvent) -> StepState:
    """The state ``event`` moves a step in ``state`` to.

    Raises:
        IllegalTransition: the table has no such move (the step is final, or not where the event applies).
    """
    try:
        return STEP_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition("step", state.value, event.value) from None


class GorchState(IntEnum):
    """gorchestrator's numbering of node states, for its clients (``/v1/tasks``)."""

    INITIAL = 0
    TO_RUN = 1
    RUNNING = 2
    SUCCESS = 3
    FAILURE = 4
    NOT_RUNNABLE = 5
    TIMEOUT = 10
    CANCELLED = 11


GORCH_STATES = {
    StepState.PENDING: GorchState.TO_RUN,
    StepState.WAITING: GorchState.TO_RUN,
    StepState.RUNNING: GorchState.RUNNING,
    StepState.SUCCEEDED: GorchState.SUCCESS,
    StepState.FAILED: GorchState.FAILURE,
    StepState.TIMED_OUT: GorchState.TIMEOUT,
    StepState.SKIPPED: GorchState.NOT_RUNNABLE,
    StepState.CANCELLED: GorchState.CANCELLED,
}


@dataclass(frozen=True)
class Step:
    id: str
    target: str
    command: str = ""
    job: str = ""
    shell: str = "sh"
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None
    on_failure: str = "skip_dependents"  # or "continue": dependents run anyway
    name: str = ""  # a display name (gorchestrator's node name)
    waits_for: tuple[str, ...] = ()  # future keys that must be set before it is dispatched
    sets: tuple[str, ...] = ()  # future keys its command declares it sets (for the check before the plan runs)
    params: Mapping[str, str] = field(default_factory=dict)  # a job step's parameter values (protocol.parameters)
    secrets: tuple[str, ...] = ()  # a command step's secret variables: names of the plan's secrets (values apart)


@dataclass(frozen=True)
class Plan:
    name: str
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def order(self) -> list[str]:
        """A topological order of the step ids (stable: plan order among independent steps)."""
        return _topological(self.steps)


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot name a future, or None when it can."""
    if KEY_PATTERN.match(key):
        return None
    return f"key {key!r}: 1-128 letters, digits, '.', '_', '-' or '/', not starting with one"


def _keys(raw: Mapping[str, Any], name: str, where: str) -> tuple[str, ...]:
    keys = raw.get(name, [])
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise PlanError(f"{where}: {name} is a list of keys")
    return tuple(dict.fromkeys(keys))  # validate() checks their syntax


def _text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if value is None:
        raise PlanError(f"{where}: {key!r} is required")
    if not isinstance(value, str):
        raise PlanError(f"{where}: {key!r} must be a string")
    return value


def _params(raw: Mapping[str, Any], where: str) -> dict[str, str]:
    params = raw.get("params", {})
    if not isinstance(params, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool) for k, v in params.items()
    ):
        raise PlanError(f"{where}: params maps parameter names to values (strings or numbers)")
    return {k: str(v) for k, v in params.items()}


def _secret_names(raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    names = raw.get("secrets", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and SECRET_NAME.match(n) for n in names):
        raise PlanError(f"{where}: secrets lists variable names (their values are given with the plan, never in it)")
    return tuple(names)


def parse_plan(data: Any) -> Plan:
    """Read our plan format (a dict, as loaded from YAML or JSON)::

        name: shop
        steps:
          - id: db
            target: role:database
            command: apt-get install -y mariadb-server
          - id: schema
            target: db
            job: load-schema            # a stored job instead of a command
            params: {release: "42"}     # its parameters' values (the job declares them)
            depends_on: [db]
            timeout: 300
            on_failure: continue
          - id: web
            target: role:web
            command: ./start-web.sh
            waits_for: [db/ready]       # dispatched once these future keys are set (and depends_on is done)
          - id: announce
            target: db
            command: crc-daemon kv set db/ready yes
            sets: [db/ready]            # the keys this step's command sets

    Raises:
        PlanError: naming the step and the problem.
    """
    if not isinstance(data, Mapping):
        raise PlanError("a plan is a mapping with 'name' and 'steps'")
    unknown = sorted(set(data) - {"name", "steps"})
    if unknown:
        raise PlanError(f"unknown plan key(s): {', '.join(unknown)}")
    name = _text(data, "name", "plan")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PlanError("a plan needs a non-empty list of steps")
    steps = []
    for index, raw in enumerate(raw_steps, 1):
        where = f"step #{index}"
        if not isinstance(raw, Mapping):
            raise PlanError(f"{where} must be a mapping")
        known = {"id", "target", "command", "job", "shell", "depends_on", "timeout", "on_failure", "name", "waits_for",
                 "sets", "params", "secrets"}  # fmt: skip
        extra = sorted(set(raw) - known)
        if extra:
            raise PlanError(f"{where}: unknown key(s) {', '.join(extra)}")
        step_id = _text(raw, "id", where)
        where = f"step {step_id!r}"
        depends = raw.get("depends_on", [])
        if isinstance(depends, str):
            depends = [depends]
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise PlanError(f"{where}: depends_on is a list of step ids")
        timeout = raw.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise PlanError(f"{where}: timeout is a positive number of seconds")
        steps.append(
            Step(
                id=step_id, target=_text(raw, "target", where), command=_text(raw, "command", where, ""),
                job=_text(raw, "job", where, ""), shell=_text(raw, "shell", where, "sh"), depends_on=tuple(depends),
                timeout=None if timeout is None else float(timeout),
                on_failure=_text(raw, "on_failure", where, "skip_dependents"), name=_text(raw, "name", where, ""),
                waits_for=_keys(raw, "waits_for", where), sets=_keys(raw, "sets", where),
                params=_params(raw, where), secrets=_secret_names(raw, where),
            )
        )  # fmt: skip
    return validate(Plan(name, tuple(steps)))


def from_gorch(data: Any, default_target: str = "") -> Plan:
    """Read gorchestrator's format: ``name``, ``digraph`` (row-major n x n; a 1 at row i, column j: node j runs
    after node i) and ``nodes`` (``id``, ``name``, ``engine``, ``artifact``, ``args``, optional ``target``).

    A node's command is its artifact followed by its arguments; its engine picks the shell (``powershell``;
    ``shell``, ``sh`` and gorchestrator's other engines run with sh).

    Raises:
        PlanError: a malformed matrix or node.
    """
    if not isinstance(data, Mapping):
        raise PlanError("a gorchestrator task is a mapping with name, digraph and nodes")
    name = _text(data, "name", "task")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise PlanError("a gorchestrator task needs a non-empty list of nodes")
    n = len(nodes)
    matrix = data.get("digraph")
    if not isinstance(matrix, list) or len(matrix) != n * n or any(v not in (0, 1) for v in matrix):
        raise PlanError(f"digraph must be a list of {n} x {n} = {n * n} zeros and ones (row-major)")
    ids: list[int] = []
    for node in nodes:
        if not isinstance(node, Mapping) or not isinstance(node.get("id"), int) or isinstance(node.get("id"), bool):
            raise PlanError("each node needs an integer id")
        ids.append(int(node["id"]))
    if sorted(ids) != list(range(n)):
        raise PlanError(f"node ids must be 0..{n - 1}, each once (they index the digraph)")
    by_id = {int(node["id"]): node for node in nodes}
    steps = []
    for j in range(n):
        node = by_id[j]
        where = f"node {j}"
        artifact = _text(node, "artifact", where, "")
        args = node.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise PlanError(f"{where}: args is a list of strings or null")
        target = node.get("target") or default_target
        if not isinstance(target, str) or not target:
            raise PlanError(f"{where}: no target (give the node a target, or the task a default one)")
        engine = str(node.get("engine") or "sh")
        steps.append(
            Step(
                id=str(j), target=target, command=" ".join([artifact, *args]).strip() or "true",
                shell="powershell" if engine == "powershell" else "sh",
                depends_on=tuple(str(i) for i in range(n) if matrix[i * n + j] == 1),
                name=str(node.get("name") or j),
            )
        )  # fmt: skip
    return validate(Plan(name, tuple(steps)))


def plan_to_wire(plan: Plan) -> dict[str, Any]:
    """The plan in our format (what ``parse_plan`` reads back)."""
    steps = []
    for s in plan.steps:
        raw: dict[str, Any] = {"id": s.id, "target": s.target, "depends_on": list(s.depends_on), "shell": s.shell,
                               "on_failure": s.on_failure}  # fmt: skip
        raw.update({k: v for k, v in (("command", s.command), ("job", s.job), ("name", s.name)) if v})
        if s.timeout is not None:
            raw["timeout"] = s.timeout
        raw.update({k: list(v) for k, v in (("waits_for", s.waits_for), ("sets", s.sets)) if v})
        if s.params:
            raw["params"] = dict(s.params)
        if s.secrets:
            raw["secrets"] = list(s.secrets)
        steps.append(raw)
    return {"name": plan.name, "steps": steps}


def validate(plan: Plan) -> Plan:
    """Check ids, references, shells and cycles before anything runs.

    Raises:
        PlanError: naming the step (and, for a cycle, the steps around it).
    """
    if len(plan.steps) > MAX_STEPS:
        raise PlanError(f"a plan has at most {MAX_STEPS} steps")
    seen: set[str] = set()
    for step in plan.steps:
        where = f"step {step.id!r}"
        if not STEP_ID.match(step.id):
            raise PlanError(f"{where}: an id is 1-63 letters, digits, '.', '_' or '-'")
        if step.id in seen:
            raise PlanError(f"{where} appears twice")
        seen.add(step.id)
        if bool(step.command) == bool(step.job):
            raise PlanError(f"{where}: give exactly one of command or job")
        if step.params and not step.job:
            raise PlanError(f"{where}: params are for a job step (the job declares them)")
        if step.secrets and step.job:
            raise PlanError(f"{where}: a job step's secrets are its job's secret parameters, not a secrets list")
        if step.shell not in SHELLS:
            raise PlanError(f"{where}: shell is one of {', '.join(SHELLS)}")
        if step.on_failure not in ("skip_dependents", "continue"):
            raise PlanError(f"{where}: on_failure is skip_dependents or continue")
        if not step.target.strip():
            raise PlanError(f"{where}: a target is required")
        for key in (*step.waits_for, *step.sets):
            problem = key_problem(key)
            if problem is not None:
                raise PlanError(f"{where}: {problem}", step=step.id)
    for step in plan.steps:
        for dep in step.depends_on:
            if dep not in seen:
                raise PlanError(f"step {step.id!r} depends on {dep!r}, which is not a step of the plan", step=step.id)
            if dep == step.id:
                raise PlanError(f"step {step.id!r} depends on itself", step=step.id)
    _topological(plan.steps)  # raises on a cycle
    return plan


def unproducible_keys(plan: Plan, machine_names: Iterable[str], existing: Iterable[str]) -> list[tuple[str, str]]:
    """(step id, key) for every key a step waits for that nothing could set: no other step that may run before it
    ``sets`` it, it is not set already (``existing``), and it is not under the name of a machine of the scenario
    (``NAME/...``: that machine may set it). A master may set any key, but a plan that relies on someone doing so by
    hand is refused: a typo would otherwise hold the step until its timeout, or forever."""
    existing_keys = set(existing)
    machines = set(machine_names)
    dependents: dict[str, set[str]] = {s.id: set() for s in plan.steps}
    for s in plan.steps:
        for dep in s.depends_on:
            dependents[dep].add(s.id)
    missing = []
    for step in plan.steps:
        if not step.waits_for:
            continue
        # the step itself and what runs after it cannot set a key before the step is dispatched
        after, stack = {step.id}, [step.id]
        while stack:
            for nxt in dependents[stack.pop()] - after:
                after.add(nxt)
                stack.append(nxt)
        produced = {key for other in plan.steps if other.id not in after for key in other.sets}
        for key in step.waits_for:
            owner, slash, _ = key.partition("/")
            if key not in produced and key not in existing_keys and not (slash and owner in machines):
                missing.append((step.id, key))
    return missing


def _topological(steps: Sequence[Step]) -> list[str]:
    indegree = {s.id: len(set(s.depends_on)) for s in steps}
    dependents: dict[str, list[str]] = {s.id: [] for s in steps}
    for s in steps:
        for dep in set(s.depends_on):
            dependents[dep].append(s.id)
    ready = [s.id for s in steps if indegree[s.id] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for nxt in dependents[current]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(steps):
        stuck = {s.id for s in steps} - set(order)
        raise PlanError(f"the steps {', '.join(_cycle(steps, stuck))} form a cycle", steps=",".join(sorted(stuck)))
    return order


def _cycle(steps: Sequence[Step], stuck: set[str]) -> list[str]:
    """One cycle among the steps that could not be ordered, as a path that returns to its start."""
    deps = {s.id: [d for d in s.depends_on if d in stuck] for s in steps if s.id in stuck}
    path: list[str] = []
    current = min(stuck)
    while current not in path:
        path.append(current)
        current = deps[current][0]
    return [*path[path.index(current) :], current]


@dataclass
class PlanRun:
    """The engine: which steps to dispatch now, given what finished.

    ``start()`` and ``finished()`` return the ids to dispatch next; ``states`` is everything there is to persist.
    Every change of a step's state goes through ``move`` (``STEP_TRANSITIONS``), the hub's too.
    """

    plan: Plan
    states: dict[str, StepState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for step in self.plan.steps:
            self.states.setdefault(step.id, StepState.PENDING)
        self._steps = {s.id: s for s in self.plan.steps}
        self._dependents: dict[str, list[str]] = {s.id: [] for s in self.plan.steps}
        for s in self.plan.steps:
            for dep in s.depends_on:
                self._dependents[dep].append(s.id)

    def start(self) -> list[str]:
        """The steps to dispatch first (or again, after a restart: those pending with their needs met)."""
        return self._ready(s.id for s in self.plan.steps)

    def finished(self, step_id: str, state: StepState) -> list[str]:
        """Record a step's outcome; returns the steps to dispatch now."""
        if not state.final:
            raise ValueError(f"{state} is not an outcome")
        if self.states[step_id].final:
            return []  # a duplicate report
        self.move(step_id, OUTCOME_EVENTS[state])
        if state is not StepState.SUCCEEDED and self._steps[step_id].on_failure == "skip_dependents":
            self._skip_after(step_id)
        return self._ready(self._dependents[step_id])

    def cancel(self) -> list[str]:
        """Cancel what has not finished; returns the steps that were running (to cancel their orders)."""
        running = [sid for sid, st in self.states.items() if st is StepState.RUNNING]
        for sid, st in self.states.items():
            if not st.final:
                self.move(sid, StepEvent.CANCEL)
        return running

    def move(self, step_id: str, event: StepEvent) -> StepState:
        """Apply ``event`` to one step; returns its new state.

        Raises:
            IllegalTransition: ``STEP_TRANSITIONS`` does not allow it in the step's state (which stays).
        """
        self.states[step_id] = advance(self.states[step_id], event)
        return self.states[step_id]

    @property
    def done(self) -> bool:
        return all(state.final for state in self.states.values())

    @property
    def succeeded(self) -> bool:
        return all(state is StepState.SUCCEEDED for state in self.states.values())

    def _ready(self, candidates: Iterable[str]) -> list[str]:
        ready = []
        for sid in candidates:
            if self.states[sid] is not StepState.PENDING:
                continue
            deps = [self.states[d] for d in self._steps[sid].depends_on]
            if all(d.final for d in deps):
                self.move(sid, StepEvent.READY)
                ready.append(sid)
        return ready

    def _skip_after(self, step_id: str) -> None:
        stack = list(self._dependents[step_id])
        while stack:
            sid = stack.pop()
            if self.states[sid] is StepState.PENDING:
                self.move(sid, StepEvent.SKIP)  # and so, in turn, everything after it
                stack.extend(self._dependents[sid])
