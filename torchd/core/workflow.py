"""Workflows (`after:`), the pure rules: which outcome satisfies an edge, the fan-in
decision, the fire id of a downstream fire, the graph's checks (unknown task, itself, a
cycle with its path) and its text and Graphviz forms. No I/O: the engine's `chains`
module hears the outcomes and fires; `store.edges` keeps the edges.

Only the downstream task names its upstreams (`after:`); the reverse edges are derived
here, at each load, so an edit of the upstream never loses its downstreams.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torchd.core.model import After, On, RunOutcome, TaskKind, TaskSpec

# The final outcomes that count as a failure of a run (after its retries).
FAILURES = frozenset({RunOutcome.FAILED, RunOutcome.TIMEOUT, RunOutcome.KILLED,
                      RunOutcome.START_ERROR})


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeRun:
    """The upstream run an edge remembers: the latest qualifying one since the downstream
    was last triggered."""

    upstream: str
    run_id: str
    outcome: RunOutcome
    ended: float
    workflow_id: str  # the fire id of the scheduled run that started the chain


@dataclass(frozen=True, slots=True, kw_only=True)
class Cause:
    """What started a downstream fire: the upstream run that completed its edges."""

    task: str  # the upstream task
    run_id: str
    outcome: RunOutcome
    workflow_id: str
    fire_id: str  # the downstream fire's id (chain_fire_id)

    def env(self) -> dict[str, str]:
        return {"TORCHD_UPSTREAM_TASK": self.task, "TORCHD_UPSTREAM_RUN_ID": self.run_id,
                "TORCHD_UPSTREAM_OUTCOME": str(self.outcome),
                "TORCHD_WORKFLOW_ID": self.workflow_id}


@dataclass(frozen=True, slots=True)
class EdgeAnswer:
    """The cluster's answer to an offered run: whether it completed the downstream's
    edges (and so cleared them), or why the cluster could not be asked."""

    fire: bool
    error: str | None = None


def chain_fire_id(task: str, upstream: str, run_id: str) -> str:
    """A downstream fire's id, the same on every host: `TASK@UPSTREAM.RUN_ID`, after the
    upstream run that completed it."""
    return f"{task}@{upstream}.{run_id}"


def is_final_failure(outcome: RunOutcome) -> bool:
    return outcome in FAILURES


def satisfies(on: On, outcome: RunOutcome) -> bool:
    """Whether an upstream run's final outcome satisfies an edge of this kind."""
    if outcome is RunOutcome.OK:
        return on is not On.FAILURE
    if outcome in FAILURES:
        return on is not On.SUCCESS
    return False  # skipped, missed, dropped, lost: no trigger


@dataclass(frozen=True, slots=True)
class Offer:
    """What one qualifying upstream run does to a downstream's edges: the edges it holds
    after (`held`), and the runs that fire it (`fire`, empty when it does not fire; then
    `held` is cleared). `expired`: upstreams whose edge fell out of `within`."""

    held: dict[str, EdgeRun]
    fire: tuple[EdgeRun, ...] = ()
    expired: tuple[str, ...] = ()


def offer(after: After, held: Mapping[str, EdgeRun], run: EdgeRun, now: float) -> Offer:
    """The fan-in rule. `run` satisfies its edge (the caller checked `satisfies`): it
    replaces what the edge held (several runs of one upstream collapse into one trigger).
    With `on: failure` it fires at once (any failure). Otherwise the downstream fires when
    every upstream's edge is satisfied, each by a run that ended within `within` of now;
    edges older than that are cleared (their run is too old to count)."""
    if after.on is On.FAILURE:
        return Offer(held={}, fire=(run,))
    edges = {name: edge for name, edge in held.items() if name in after.tasks}
    edges[run.upstream] = run
    expired: tuple[str, ...] = ()
    if after.within is not None:
        expired = tuple(sorted(name for name, edge in edges.items()
                               if now - edge.ended > after.within))
        for name in expired:
            del edges[name]
    if all(name in edges for name in after.tasks):
        return Offer(held={}, fire=tuple(edges[name] for name in after.tasks),
                     expired=expired)
    return Offer(held=edges, expired=expired)


def kept_on_reload(after: After | None, held: Mapping[str, EdgeRun]) -> dict[str, EdgeRun]:
    """The satisfied edges a reload keeps: those whose upstream is still named and whose
    run still satisfies the edge's kind. A reload never fires a downstream."""
    if after is None or after.on is On.FAILURE:
        return {}
    return {name: edge for name, edge in held.items()
            if name in after.tasks and satisfies(after.on, edge.outcome)}


def downstreams(tasks: Iterable[TaskSpec]) -> dict[str, tuple[str, ...]]:
    """Each task's downstream tasks, derived from their `after:` (sorted by name)."""
    found: dict[str, list[str]] = {}
    for task in tasks:
        if task.after is not None:
            for upstream in task.after.tasks:
                found.setdefault(upstream, []).append(task.name)
    return {name: tuple(sorted(set(names))) for name, names in found.items()}


@dataclass(frozen=True, slots=True)
class GraphProblem:
    """A task whose `after:` cannot be used: its name and what is wrong."""

    task: str
    message: str


def graph_problems(tasks: Iterable[TaskSpec]) -> list[GraphProblem]:
    """Unknown upstreams, a task after itself or after a daemon-type task, and every
    cycle (with its path), in the tasks' order."""
    specs = {task.name: task for task in tasks}
    problems: list[GraphProblem] = []
    for task in specs.values():
        if task.after is None:
            continue
        for upstream in task.after.tasks:
            if upstream == task.name:
                problems.append(GraphProblem(task.name, "a task cannot come after itself"))
            elif upstream not in specs:
                close = difflib.get_close_matches(upstream, list(specs), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(GraphProblem(task.name, f"no task named '{upstream}'{hint}"))
            elif specs[upstream].kind is TaskKind.DAEMON:
                problems.append(GraphProblem(task.name, f"'{upstream}' is a daemon-type "
                                             "task: it is kept running, and its runs end "
                                             "no chain"))
    problems.extend(GraphProblem(path[0], "a cycle: " + " -> ".join(path))
                    for path in cycles(specs))
    return problems


def cycles(specs: Mapping[str, TaskSpec]) -> list[tuple[str, ...]]:
    """Each cycle of the graph once, as a path upstream to downstream that ends where it
    starts (`a -> b -> a`); a self-reference is reported apart."""
    graph = {name: sorted(u for u in (spec.after.tasks if spec.after else ())
                          if u in specs and u != name)
             for name, spec in specs.items()}
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    found: list[tuple[str, ...]] = []
    for root in graph:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            name, index = stack[-1]
            ups = graph[name]
            if index == len(ups):
                stack.pop()
                path.pop()
                colour[name] = black
                continue
            stack[-1] = (name, index + 1)
            upstream = ups[index]
            if colour[upstream] == grey:  # back to a task on the path: a cycle
                loop = path[path.index(upstream):]
                # walked downstream to upstream; shown upstream to downstream
                shown = (upstream, *reversed(loop[1:]), upstream)
                found.append(shown)
            elif colour[upstream] == white:
                colour[upstream] = grey
                stack.append((upstream, 0))
                path.append(upstream)
    return found


def _after_text(after: After) -> str:
    text = f"after {', '.join(after.tasks)}"
    if after.on is not On.SUCCESS:
        text += f" on {after.on}"
    if after.within is not None:
        text += f" within {after.within:g}s"
    return text


def graph_text(tasks: Iterable[TaskSpec]) -> list[str]:
    """The dependency graph as lines, one per task in a chain, each after its upstreams:
    the task, what starts it (its schedule, or its `after`), and its downstreams."""
    specs = {task.name: task for task in tasks}
    below = downstreams(specs.values())
    placed: dict[str, None] = {}

    def place(name: str, seen: frozenset[str]) -> None:
        spec = specs[name]
        for upstream in spec.after.tasks if spec.after else ():
            if upstream in specs and upstream not in placed and upstream not in seen:
                place(upstream, seen | {name})
        placed.setdefault(name)

    for name, spec in specs.items():
        if name in below or spec.after is not None:
            place(name, frozenset())
    lines = []
    for name in placed:
        spec = specs[name]
        start = _after_text(spec.after) if spec.after else (spec.schedule_text or "by hand")
        then = f"  -> {', '.join(below[name])}" if name in below else ""
        lines.append(f"{name}  ({start}){then}")
    return lines


def graph_dot(tasks: Iterable[TaskSpec]) -> str:
    """The dependency graph in Graphviz's language: an arrow from each upstream to its
    downstream, labelled with the edge's kind unless it is `success`."""
    lines = ["digraph torchd {", "  rankdir=LR;"]
    for task in tasks:
        if task.after is None:
            continue
        label = "" if task.after.on is On.SUCCESS else f' [label="{task.after.on}"]'
        lines.extend(f'  "{upstream}" -> "{task.name}"{label};'
                     for upstream in task.after.tasks)
    lines.append("}")
    return "\n".join(lines)
