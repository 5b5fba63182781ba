"""Chains: the engine's part of workflows (`after:`). It hears the final outcome of each
run (after its retries: the scheduler tells it, from the one place that knows no retry
follows) and each fire of an upstream that did not run, keeps each downstream's edges
(core.workflow.offer decides; store.edges keeps them across restarts), and asks the
scheduler to fire a downstream whose edges are complete. A downstream that will not run
because of its upstream gets a skipped row saying why.

In cluster mode the edges of a `run_on: one` downstream live in Redis instead, where a
script sets an edge and, when the set is complete, clears it in the same step: only one
host can complete it, so the downstream runs once per triggering upstream run across the
fleet, on the host that heard the run that completed it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from torchd.core.clock import Clock
from torchd.core.events import Event, FireMissed, FireSkipped
from torchd.core.model import After, On, RunOutcome, TaskSpec, Trigger
from torchd.core.workflow import (
    FAILURES,
    Cause,
    EdgeRun,
    chain_fire_id,
    downstreams,
    kept_on_reload,
    offer,
    satisfies,
)
from torchd.engine.participation import Participation
from torchd.process.runner import LaunchRequest

log = logging.getLogger("torchd.workflow")


class EdgeKeeper(Protocol):
    """Where satisfied edges are kept across restarts (store.edges.EdgeStore)."""

    def write(self, downstream: str, held: list[EdgeRun]) -> None: ...


class Chains:
    def __init__(self, *, clock: Clock, on_event: Callable[[Event], None],
                 fire: Callable[[str, Cause], None], cluster: Participation,
                 active: Callable[[TaskSpec], bool]) -> None:
        self._clock = clock
        self._on_event = on_event
        self._fire = fire  # the scheduler's: fire this downstream for this cause
        self._cluster = cluster
        self._active = active  # whether this host fires the task (enabled, hosts)
        self._specs: dict[str, TaskSpec] = {}
        self._below: dict[str, tuple[str, ...]] = {}  # upstream -> its downstreams
        self._held: dict[str, dict[str, EdgeRun]] = {}  # downstream -> upstream -> run
        self._keeper: EdgeKeeper | None = None
        self._offering: set[asyncio.Task[None]] = set()

    def restore(self, keeper: EdgeKeeper | None, held: Mapping[str, dict[str, EdgeRun]]
                ) -> None:
        """The edges an earlier daemon left satisfied (before the first configure)."""
        self._keeper = keeper
        self._held = {down: dict(edges) for down, edges in held.items() if edges}

    def configure(self, specs: Mapping[str, TaskSpec]) -> None:
        """A load or reload: derive the reverse edges again, and keep the satisfied edges
        of unchanged ones (core.workflow.kept_on_reload). A reload never fires."""
        self._specs = dict(specs)
        self._below = downstreams(specs.values())
        for down in list(self._held):
            spec = specs.get(down)
            kept = kept_on_reload(spec.after if spec else None, self._held[down])
            if kept != self._held[down]:
                gone = sorted(set(self._held[down]) - set(kept))
                log.info("task %s: satisfied edge(s) from %s cleared by the reload", down,
                         ", ".join(gone))
                self._store(down, kept)

    def downstreams_of(self, name: str) -> tuple[str, ...]:
        return self._below.get(name, ())

    def view(self, name: str) -> dict[str, object]:
        """What status shows of the task's place in workflows."""
        spec = self._specs.get(name)
        after = spec.after if spec is not None else None
        entry: dict[str, object] = {
            "upstreams": list(after.tasks) if after else [],
            "downstreams": list(self._below.get(name, ())),
        }
        if after is not None:
            entry["after"] = {"on": str(after.on), "within": after.within,
                              "satisfied": sorted(self._held.get(name, {}))}
        return entry

    # ----- what is heard -----------------------------------------------------------------
    def final(self, request: LaunchRequest, outcome: RunOutcome, ended: float) -> None:
        """A run's final outcome (no retry follows): offer it to each downstream."""
        task = request.task
        below = self._below.get(task)
        if not below or not request.cascade:
            return
        workflow = request.cause.workflow_id if request.cause else request.fire_id
        run = EdgeRun(upstream=task, run_id=request.run_id, outcome=outcome, ended=ended,
                      workflow_id=workflow)
        for down in below:
            spec = self._specs.get(down)
            if spec is None or spec.after is None or not self._active(spec):
                continue
            if satisfies(spec.after.on, outcome):
                self._offer(spec, spec.after, run)
            elif spec.after.on is not On.FAILURE and outcome in FAILURES:
                shown = "" if outcome is RunOutcome.FAILED else f" ({outcome})"
                self._skip(down, chain_fire_id(down, task, run.run_id),
                           f"upstream failed: {task} run {run.run_id}{shown}")

    def not_run(self, event: FireSkipped | FireMissed) -> None:
        """A fire of an upstream that did not run (skipped, dropped, missed): no trigger;
        its downstreams that wait for it say why they do not run."""
        below = self._below.get(event.task)
        if not below:
            return
        if isinstance(event, FireSkipped):
            what = (f"upstream {'dropped' if event.dropped else 'skipped'}: {event.task} "
                    f"fire {event.fire_id} ({event.reason})")
        else:
            what = (f"upstream missed: {event.task}, {event.count} fire(s) to "
                    f"{event.fire_id}")
        for down in below:
            spec = self._specs.get(down)
            if (spec is not None and spec.after is not None and spec.after.on is not On.FAILURE
                    and self._active(spec)):
                self._skip(down, None, what)

    # ----- deciding ----------------------------------------------------------------------
    def _offer(self, spec: TaskSpec, after: After, run: EdgeRun) -> None:
        down = spec.name
        if self._cluster.claims_fires(spec):
            loop = asyncio.get_running_loop()
            task = loop.create_task(self._offer_in_cluster(spec, after, run))
            self._offering.add(task)
            task.add_done_callback(self._offering.discard)
            return
        decided = offer(after, self._held.get(down, {}), run, self._clock.time())
        for upstream in decided.expired:
            log.info("task %s: the run of %s it held is older than within=%gs: cleared",
                     down, upstream, after.within or 0.0)
        self._store(down, decided.held)  # committed before the downstream starts
        if decided.fire:
            self._start(down, run)
        else:
            waiting = [name for name in after.tasks if name not in decided.held]
            log.info("task %s: edge from %s satisfied by run %s; waiting for %s", down,
                     run.upstream, run.run_id, ", ".join(waiting))

    async def _offer_in_cluster(self, spec: TaskSpec, after: After, run: EdgeRun) -> None:
        claims = self._cluster.claims
        assert claims is not None  # noqa: S101 - only in cluster mode
        down = spec.name
        answer = await claims.offer_edge(down, after, run, self._clock.time())
        if self._specs.get(down) is not spec:
            return  # changed or removed meanwhile
        if answer.error is not None:
            self._skip(down, chain_fire_id(down, run.upstream, run.run_id),
                       f"cluster: {answer.error}")
        elif answer.fire:
            self._start(down, run)
        else:
            log.info("task %s: edge from %s satisfied by run %s (in the cluster)", down,
                     run.upstream, run.run_id)

    def _start(self, down: str, run: EdgeRun) -> None:
        cause = Cause(task=run.upstream, run_id=run.run_id, outcome=run.outcome,
                      workflow_id=run.workflow_id,
                      fire_id=chain_fire_id(down, run.upstream, run.run_id))
        log.info("task %s: fired by %s run %s (%s), fire %s", down, run.upstream,
                 run.run_id, run.outcome, cause.fire_id)
        self._fire(down, cause)

    def _store(self, down: str, held: dict[str, EdgeRun]) -> None:
        if held:
            self._held[down] = held
        else:
            self._held.pop(down, None)
        if self._keeper is not None:
            self._keeper.write(down, list(held.values()))

    def _skip(self, down: str, named: str | None, reason: str) -> None:
        log.info("task %s: not run: %s", down, reason)
        self._on_event(FireSkipped(task=down, scheduled=self._clock.time(), reason=reason,
                                   named=named, trigger=Trigger.UPSTREAM))

    def cancel(self) -> None:
        """Shutdown: offers to the cluster not answered yet are abandoned."""
        for task in self._offering:
            task.cancel()
