"""State tables and the event bus: small rules the engine depends on."""

from __future__ import annotations

import pytest

from torchd.core.events import EventBus, FireSettled, FireSkipped
from torchd.core.model import KEEPER_MOVES, RUN_MOVES, KeeperState, RunState, StateMoveError
from torchd.engine.keepalive import Keeper

S = KeeperState


@pytest.mark.parametrize("path", [
    [S.RUNNING, S.BACKOFF, S.STARTING, S.BACKOFF, S.STOPPED, S.STARTING],
    [S.STOPPED], [S.BACKOFF, S.STOPPED], [S.RUNNING, S.STOPPED],
], ids=["supervised", "paused-at-once", "lease-lost-in-backoff", "stopped-while-up"])
def test_a_keeper_moves_along_the_table(path: list[KeeperState]) -> None:
    keeper = Keeper(task="t", slot=0)
    for state in path:
        keeper.change(state)
    assert keeper.state is path[-1]


@pytest.mark.parametrize(("start", "to"), [
    (S.STOPPED, S.RUNNING), (S.STOPPED, S.BACKOFF), (S.BACKOFF, S.RUNNING),
    (S.RUNNING, S.STARTING)])
def test_a_keeper_refuses_a_move_off_the_table(start: KeeperState, to: KeeperState) -> None:
    keeper = Keeper(task="t", slot=1, state=start)
    with pytest.raises(StateMoveError, match=f"task t instance 1: no move from {start} to {to}"):
        keeper.change(to)
    assert keeper.state is start


def test_every_state_has_its_moves() -> None:
    assert set(KEEPER_MOVES) == set(KeeperState)
    assert set(RUN_MOVES) == set(RunState)


def test_the_bus_calls_by_type_in_the_order_of_subscription() -> None:
    bus, heard = EventBus(), []
    bus.subscribe(FireSettled, lambda e: heard.append(("first", e.task)))
    bus.subscribe_all(lambda e: heard.append(("all", e.task)))
    bus.subscribe(FireSettled, lambda e: heard.append(("last", e.task)))
    bus.publish(FireSettled(task="a", scheduled=0.0))
    bus.publish(FireSkipped(task="b", scheduled=0.0, reason="paused"))
    assert heard == [("first", "a"), ("all", "a"), ("last", "a"), ("all", "b")]
