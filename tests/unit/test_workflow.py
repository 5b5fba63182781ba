"""Workflows (`after:`): the key's parse and its load errors, the graph's checks, and the
fan-in rules (core.workflow), as tables of cases."""

from __future__ import annotations

import textwrap

import pytest

from torchd.config.loader import ParseCache, parse_config
from torchd.core.errors import ConfigError
from torchd.core.model import After, Config, On, RunOutcome
from torchd.core.workflow import (
    EdgeRun,
    chain_fire_id,
    downstreams,
    graph_dot,
    graph_text,
    kept_on_reload,
    offer,
    satisfies,
)


def load(text: str, cache: ParseCache | None = None) -> Config:
    body = "daemon: {timezone: UTC}\ntasks:\n" + textwrap.indent(textwrap.dedent(text), "  ")
    return parse_config(body.encode(), "t.yaml", identity=None, as_root=False, cache=cache)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return [str(problem) for problem in caught.value.problems]


# ----- the key --------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    pytest.param("after: extract", After(tasks=("extract",)), id="one-name"),
    pytest.param("after: [extract, load]", After(tasks=("extract", "load")), id="list"),
    pytest.param("after: {tasks: [extract, load], within: 2h}",
                 After(tasks=("extract", "load"), within=7200.0), id="within"),
    pytest.param("after: {tasks: extract, on: failure}",
                 After(tasks=("extract",), on=On.FAILURE), id="plain-on-is-the-word"),
    pytest.param("after: {tasks: [extract], 'on': always}",
                 After(tasks=("extract",), on=On.ALWAYS), id="quoted-on"),
])
def test_after_forms(given: str, expected: After) -> None:
    """`after` is a name, a list, or a mapping of tasks, on and within."""
    config = load(f"""
        - {{name: extract, schedule: "@hourly", command: "true"}}
        - {{name: load, schedule: "@hourly", command: "true"}}
        - {{name: down, {given}, command: "true"}}
    """)
    down = config.by_name()["down"]
    assert down.after == expected
    assert down.schedule is None


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param('- {name: a, after: b, schedule: "@hourly", command: "true"}\n'
                 '- {name: b, schedule: "@hourly", command: "true"}',
                 ["t.yaml:3: task 'a': schedule: a task with 'after' is started by its "
                  "upstream tasks' runs and takes no schedule"], id="with-schedule"),
    pytest.param('- {name: a, after: b, at: "2030-01-01T00:00:00Z", command: "true"}\n'
                 '- {name: b, schedule: "@hourly", command: "true"}',
                 ["t.yaml:3: task 'a': at: a task with 'after' is started by its "
                  "upstream tasks' runs and takes no schedule"], id="with-at"),
    pytest.param('- {name: a, after: lod, command: "true"}\n'
                 '- {name: load, schedule: "@hourly", command: "true"}',
                 ["t.yaml:3: task 'a': after: no task named 'lod' (did you mean 'load'?)"],
                 id="unknown"),
    pytest.param('- {name: a, after: a, command: "true"}',
                 ["t.yaml:3: task 'a': after: a task cannot come after itself"], id="self"),
    pytest.param('- {name: a, after: c, command: "true"}\n'
                 '- {name: b, after: a, command: "true"}\n'
                 '- {name: c, after: b, command: "true"}',
                 ["t.yaml:3: task 'a': after: a cycle: a -> b -> c -> a"], id="cycle"),
    pytest.param('- {name: a, type: daemon, command: "true"}\n'
                 '- {name: b, after: a, command: "true"}',
                 ["t.yaml:4: task 'b': after: 'a' is a daemon-type task: it is kept "
                  "running, and its runs end no chain"], id="after-a-daemon-task"),
    pytest.param('- {name: a, type: daemon, after: b, command: "true"}\n'
                 '- {name: b, schedule: "@hourly", command: "true"}',
                 ["t.yaml:3: task 'a': after: a daemon task is kept running and is "
                  "started by no other task"], id="daemon-task-with-after"),
    pytest.param('- {name: a, after: {tasks: [], on: sometimes}, command: "true"}',
                 ["t.yaml:3: task 'a': after: tasks: expected at least one task name",
                  "t.yaml:3: task 'a': after: on: 'sometimes' is not one of: success, "
                  "failure, always"], id="bad-mapping"),
    pytest.param('- {name: a, after: [b, b], command: "true"}\n'
                 '- {name: b, schedule: "@hourly", command: "true"}',
                 ["t.yaml:3: task 'a': after: names b more than once"], id="twice"),
    pytest.param('- {name: a, after: {on: failure}, command: "true"}',
                 ["t.yaml:3: task 'a': after: 'tasks' (the upstream task or tasks) is "
                  "required"], id="no-tasks"),
])
def test_after_load_errors(text: str, expected: list[str]) -> None:
    """Each mistake is a load error with file, line and task."""
    assert problems(text) == expected


def test_every_cycle_is_reported_once_with_its_path() -> None:
    """Two separate cycles: two problems, each at its first task's `after:` line."""
    assert problems("""
        - {name: a, after: b, command: "true"}
        - {name: b, after: a, command: "true"}
        - {name: x, after: y, command: "true"}
        - {name: y, after: [x, a], command: "true"}
    """) == ["t.yaml:4: task 'a': after: a cycle: a -> b -> a",
             "t.yaml:6: task 'x': after: a cycle: x -> y -> x"]


def test_a_cached_task_keeps_its_after_line_when_it_moves() -> None:
    """A reload that reuses a parsed task moved down keeps the line of its `after:` true."""
    cache = ParseCache()
    first = load('- {name: b, schedule: "@hourly", command: "true"}\n'
                 '- name: a\n  after: b\n  command: "true"\n', cache)
    moved = load('- {name: c, schedule: "@hourly", command: "true"}\n'
                 '- {name: b, schedule: "@hourly", command: "true"}\n'
                 '- name: a\n  after: b\n  command: "true"\n', cache)
    after_first = first.by_name()["a"].after
    after_moved = moved.by_name()["a"].after
    assert after_first is not None
    assert after_moved is not None
    assert after_moved.line == after_first.line + 1 == 6


# ----- the graph ------------------------------------------------------------------------
EXAMPLE = """
    - {name: extract, schedule: "0 0 2 * * *", command: ./extract.sh}
    - {name: transform, after: extract, command: ./transform.sh}
    - name: report
      after: {tasks: [transform, load], within: 2h}
      command: ./report.sh
    - {name: load, after: extract, command: ./load.sh}
    - name: alert
      after: {tasks: [extract, transform, report], on: failure}
      command: ./alert.sh
"""


def test_reverse_edges_are_derived() -> None:
    """Only the downstream names its upstreams; each upstream's downstreams are derived."""
    assert downstreams(load(EXAMPLE).tasks) == {
        "extract": ("alert", "load", "transform"), "transform": ("alert", "report"),
        "load": ("report",), "report": ("alert",)}


def test_graph_text_places_each_task_after_its_upstreams() -> None:
    """One line per task: what starts it and its downstreams."""
    assert graph_text(load(EXAMPLE).tasks) == [
        "extract  (0 0 2 * * *)  -> alert, load, transform",
        "transform  (after extract)  -> alert, report",
        "load  (after extract)  -> report",
        "report  (after transform, load within 7200s)  -> alert",
        "alert  (after extract, transform, report on failure)",
    ]


def test_graph_dot_labels_edges_that_are_not_success() -> None:
    dot = graph_dot(load(EXAMPLE).tasks).splitlines()
    assert dot[0] == "digraph torchd {"
    assert '  "transform" -> "report";' in dot
    assert '  "report" -> "alert" [label="failure"];' in dot


# ----- the fan-in rules -----------------------------------------------------------------
def run(upstream: str, outcome: RunOutcome = RunOutcome.OK, ended: float = 1000.0,
        run_id: str | None = None) -> EdgeRun:
    return EdgeRun(upstream=upstream, run_id=run_id or f"{upstream}-{ended:g}",
                   outcome=outcome, ended=ended, workflow_id="extract@2026-01-01T02:00:00Z")


FAN_IN = After(tasks=("transform", "load"))


@pytest.mark.parametrize(("on", "outcome", "expected"), [
    (On.SUCCESS, RunOutcome.OK, True),
    (On.SUCCESS, RunOutcome.FAILED, False),
    (On.SUCCESS, RunOutcome.SKIPPED, False),
    (On.SUCCESS, RunOutcome.KILLED, False),
    (On.FAILURE, RunOutcome.FAILED, True),
    (On.FAILURE, RunOutcome.TIMEOUT, True),
    (On.FAILURE, RunOutcome.KILLED, True),
    (On.FAILURE, RunOutcome.START_ERROR, True),
    (On.FAILURE, RunOutcome.OK, False),
    (On.FAILURE, RunOutcome.SKIPPED, False),
    (On.FAILURE, RunOutcome.MISSED, False),
    (On.ALWAYS, RunOutcome.OK, True),
    (On.ALWAYS, RunOutcome.KILLED, True),
    (On.ALWAYS, RunOutcome.MISSED, False),
    (On.ALWAYS, RunOutcome.DROPPED, False),
    (On.ALWAYS, RunOutcome.LOST, False),
], ids=str)
def test_which_final_outcome_satisfies_an_edge(on: On, outcome: RunOutcome,
                                               expected: bool) -> None:
    """timeout, killed, start-error and failed are failures; skipped or missed fires (and
    lost runs) never trigger."""
    assert satisfies(on, outcome) is expected


def test_fan_in_cases() -> None:
    """A table of sequences: the runs offered (upstream, outcome, ended) and what fires."""
    cases: list[tuple[str, After, list[EdgeRun], list[tuple[str, ...]]]] = [
        ("success of both", FAN_IN, [run("transform"), run("load", ended=1001)],
         [(), ("transform", "load")]),
        ("failure does not count", FAN_IN,
         [run("transform"), run("load", RunOutcome.FAILED, 1001)], [(), ()]),
        ("kill does not count", FAN_IN,
         [run("load", RunOutcome.KILLED), run("transform", ended=1001)], [(), ()]),
        ("retry then success (only final outcomes are offered)", FAN_IN,
         [run("transform", ended=1005), run("load", ended=1010)],
         [(), ("transform", "load")]),
        ("two successes before the other upstream collapse", FAN_IN,
         [run("transform", ended=1001), run("transform", ended=1002),
          run("load", ended=1003), run("load", ended=1004)],
         [(), (), ("transform", "load"), ()]),
        ("within expired", After(tasks=("transform", "load"), within=60.0),
         [run("transform", ended=1000), run("load", ended=1100)], [(), ()]),
        ("within met", After(tasks=("transform", "load"), within=60.0),
         [run("transform", ended=1000), run("load", ended=1030)], [(), ("transform", "load")]),
        ("on failure fires at each failure", After(tasks=("a", "b"), on=On.FAILURE),
         [run("a", RunOutcome.FAILED), run("b", RunOutcome.TIMEOUT, 1001)], [("a",), ("b",)]),
        ("on always: every upstream finished", After(tasks=("a", "b"), on=On.ALWAYS),
         [run("a", RunOutcome.FAILED), run("b", ended=1001)], [(), ("a", "b")]),
    ]
    for label, after, offered, expected in cases:
        held: dict[str, EdgeRun] = {}
        fired: list[tuple[str, ...]] = []
        for edge in offered:
            if not satisfies(after.on, edge.outcome):
                fired.append(())
                continue
            decided = offer(after, held, edge, now=edge.ended)
            held = decided.held
            fired.append(tuple(r.upstream for r in decided.fire))
        assert fired == expected, label


def test_the_fire_carries_the_latest_run_of_each_upstream() -> None:
    """Of two successes of one upstream, the latest is remembered."""
    first = offer(FAN_IN, {}, run("transform", ended=1001), now=1001)
    second = offer(FAN_IN, first.held, run("transform", ended=1002), now=1002)
    fired = offer(FAN_IN, second.held, run("load", ended=1003), now=1003)
    assert [r.run_id for r in fired.fire] == ["transform-1002", "load-1003"]
    assert fired.held == {}


def test_an_expired_edge_is_cleared() -> None:
    after = After(tasks=("transform", "load"), within=60.0)
    held = offer(after, {}, run("transform", ended=1000), now=1000).held
    decided = offer(after, held, run("load", ended=1100), now=1100)
    assert (decided.fire, decided.expired, set(decided.held)) == ((), ("transform",), {"load"})


@pytest.mark.parametrize(("after", "kept"), [
    pytest.param(After(tasks=("transform", "load")), {"transform"}, id="unchanged"),
    pytest.param(After(tasks=("load",)), set(), id="edge-removed"),
    pytest.param(After(tasks=("transform", "load", "extra")), {"transform"}, id="edge-added"),
    pytest.param(After(tasks=("transform", "load"), on=On.FAILURE), set(), id="now-on-failure"),
    pytest.param(None, set(), id="after-removed"),
])
def test_a_reload_keeps_satisfied_edges_of_unchanged_ones(after: After | None,
                                                          kept: set[str]) -> None:
    """Only the edges still named, whose run still satisfies their kind, are kept."""
    held = {"transform": run("transform")}
    assert set(kept_on_reload(after, held)) == kept


def test_the_downstream_fire_id_names_the_upstream_run() -> None:
    assert chain_fire_id("report", "transform", "3f9c1a2b4c5d") == (
        "report@transform.3f9c1a2b4c5d")
