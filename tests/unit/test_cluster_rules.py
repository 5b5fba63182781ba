"""Cluster mode's pure rules: who claims first, and how a host names itself."""

from __future__ import annotations

import pytest

from torchd.cluster.coordinator import CLAIM_SPREAD, OVERLOADED_DELAY, Cluster, redact
from torchd.core.model import ClusterSettings
from torchd.system.hostinfo import host_id


@pytest.mark.parametrize(("load", "max_load", "delay"), [
    pytest.param(0.0, 0.9, 0.0, id="idle"),
    pytest.param(0.5, 0.9, 0.5 * CLAIM_SPREAD, id="half"),
    pytest.param(0.9, 0.9, 0.9 * CLAIM_SPREAD, id="at-max"),
    pytest.param(0.91, 0.9, OVERLOADED_DELAY, id="over"),
    pytest.param(3.0, 5.0, CLAIM_SPREAD, id="capped"),
])
def test_less_loaded_hosts_claim_first(load: float, max_load: float, delay: float) -> None:
    cluster = Cluster(ClusterSettings(redis="redis://127.0.0.1:1/0", max_load=max_load),
                      host_id="h", describe=dict)
    cluster.load = load
    assert cluster.claim_delay() == pytest.approx(delay)


def test_redis_passwords_stay_out_of_logs() -> None:
    assert redact("redis://user:s3cret@10.0.0.5:6379/0") == "redis://user:***@10.0.0.5:6379/0"
    assert redact("redis://10.0.0.5:6379/0") == "redis://10.0.0.5:6379/0"


def test_host_id_prefers_the_file_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHD_HOST_ID", "from-env")
    assert host_id("from-file") == "from-file"
    assert host_id(None) == "from-env"
