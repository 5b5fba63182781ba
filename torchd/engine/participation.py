"""This host's part in a cluster, as the engine sees it: which fires need a claim, which
daemon-type tasks run only while this host holds their lease, and what a leased instance
is told (its guard, its fencing token). Without cluster mode every fire runs here."""

from __future__ import annotations

from typing import Protocol

from torchd.core.model import After, Claim, RunOn, TaskKind, TaskSpec, fire_id
from torchd.core.workflow import EdgeAnswer, EdgeRun

LEASE_MARGIN = 1.0  # a leased instance's guard ends it this long before the lease expires


class FireClaims(Protocol):
    """Cluster mode's say over `run_on: one` tasks (the cluster module implements it)."""

    async def claim(self, task: str, scheduled: float) -> Claim: ...

    def holds(self, task: str) -> bool: ...

    async def offer_edge(self, downstream: str, after: After, run: EdgeRun,
                         now: float) -> EdgeAnswer:
        """Set the downstream's edge from run.upstream in the cluster; if that completes
        its edges, clear them in the same step and answer fire (core.workflow.offer's
        rule, done atomically by the cluster)."""

    def lease_expiry(self, task: str) -> float | None:
        """When the lease held expires (CLOCK_BOOTTIME), unless renewed."""

    def fencing_token(self, task: str) -> int | None: ...

    @property
    def lease_ttl(self) -> float: ...


def claimed_fires(spec: TaskSpec) -> bool:
    """A cron task whose every fire is claimed: runs once across the cluster."""
    return spec.kind is TaskKind.CRON and spec.run_on is RunOn.ONE


def leased(spec: TaskSpec) -> bool:
    """A daemon-type task that runs on the one host holding its lease."""
    return spec.kind is TaskKind.DAEMON and spec.run_on is RunOn.ONE


class Participation:
    __slots__ = ("claims",)

    def __init__(self, claims: FireClaims | None) -> None:
        self.claims = claims

    def claims_fires(self, spec: TaskSpec) -> bool:
        """A fire of this task runs here only if this host wins its claim."""
        return self.claims is not None and spec.run_on is RunOn.ONE

    def leased(self, spec: TaskSpec) -> bool:
        """This daemon-type task runs here only while this host holds its lease."""
        return self.claims is not None and leased(spec)

    def holds(self, spec: TaskSpec) -> bool:
        """Whether this host may run the task's instances now, as far as the cluster goes."""
        return self.claims is None or spec.run_on is RunOn.ALL or self.claims.holds(spec.name)

    def lease_expiry(self, name: str) -> float | None:
        return None if self.claims is None else self.claims.lease_expiry(name)

    def guard(self, spec: TaskSpec) -> tuple[tuple[float, float], int | None] | None:
        """For a leased instance: its guard's (grace, margin), so that it never outlives
        the lease even with its daemon frozen, and its fencing token."""
        if self.claims is None or not self.leased(spec):
            return None
        return ((min(spec.kill_grace, self.claims.lease_ttl / 3), LEASE_MARGIN),
                self.claims.fencing_token(spec.name))

    def view(self, spec: TaskSpec, last_claim: tuple[float, str | None] | None
             ) -> dict[str, object]:
        """What `status` shows of the task's standing in the cluster."""
        if self.claims is None or not self.claims_fires(spec):
            return {}
        if spec.kind is TaskKind.DAEMON:
            return {"lease_held": self.claims.holds(spec.name)}
        if last_claim is None:
            return {}
        return {"last_claim": {"fire": fire_id(spec.name, last_claim[0]),
                               "host": last_claim[1]}}
