"""config.lint: each warning `torchd check` gives, its silencing, and what it leaves alone."""

from __future__ import annotations

import ipaddress
import textwrap
from datetime import UTC, datetime

import pytest

from torchd.config.lint import lint
from torchd.config.loader import parse_config
from torchd.core.errors import ConfigError
from torchd.core.hostmatch import HostIdentity

NOW = datetime(2026, 12, 6, tzinfo=UTC).timestamp()  # the next two years: 2027 and 2028


def warnings(text: str, **given: object) -> list[str]:
    config = parse_config(textwrap.dedent(text).encode(), "t.yaml", identity=None)
    return [str(w) for w in lint(config, now=NOW, **given)]  # type: ignore[arg-type]


def one_task(extra: str, schedule: str = "0 0 * * * *") -> str:
    keys = "".join(f"    {line}\n" for line in extra.splitlines())
    return f'tasks:\n  - name: job\n    schedule: "{schedule}"\n    command: ["/bin/true"]\n{keys}'


def test_dst_names_the_skipped_and_repeated_dates_and_what_torchd_does() -> None:
    """02:30 in Paris: skipped each March, repeated each October, with the dates."""
    assert warnings(one_task("timezone: Europe/Paris", "0 30 2 * * *")) == [
        "t.yaml:3: task 'job': schedule: '0 30 2 * * *' in Europe/Paris: skipped wall time "
        "02:30:00 on 2027-03-28 (the clock jumps from 02:00 to 03:00; torchd fires once at "
        "03:00:00); 02:30:00 on 2028-03-26 (the clock jumps from 02:00 to 03:00; torchd fires "
        "once at 03:00:00) [dst] (pick a time outside the change, or timezone: UTC; or "
        "silence it with lint: {ignore: [dst]})",
        "t.yaml:3: task 'job': schedule: '0 30 2 * * *' in Europe/Paris: repeated wall time "
        "02:30:00 on 2027-10-31 (shown twice; torchd fires at the first showing only); "
        "02:30:00 on 2028-10-29 (shown twice; torchd fires at the first showing only) [dst] "
        "(pick a time outside the change, or timezone: UTC; or silence it with lint: "
        "{ignore: [dst]})",
    ]


@pytest.mark.parametrize(("policy", "skipped", "repeated"), [
    pytest.param("{skipped: skip}", "it does not fire (dst: skipped: skip)",
                 "torchd fires at the first showing only", id="skip"),
    pytest.param("{repeated: both}", "torchd fires once at 03:00:00",
                 "torchd fires at both showings (dst: repeated: both)", id="both"),
])
def test_dst_says_what_the_tasks_policy_does(policy: str, skipped: str, repeated: str) -> None:
    found = warnings(one_task(f"timezone: Europe/Paris\ndst: {policy}", "0 30 2 * * *"))
    assert len(found) == 2
    assert f"(the clock jumps from 02:00 to 03:00; {skipped})" in found[0]
    assert f"(shown twice; {repeated})" in found[1]


def test_every_hour_with_a_policy_is_warned_about() -> None:
    """With dst: given, an every-hour schedule no longer follows elapsed time."""
    found = warnings(one_task("timezone: Europe/Paris\ndst: {skipped: skip}", "0 30 * * * *"))
    assert "it does not fire (dst: skipped: skip)" in found[0]


@pytest.mark.parametrize(("zone", "schedule"), [
    pytest.param("UTC", "0 30 2 * * *", id="utc"),
    pytest.param("Europe/Paris", "0 30 4 * * *", id="outside-the-change"),
    pytest.param("Europe/Paris", "0 30 * * * *", id="every-hour-follows-elapsed-time"),
    pytest.param("Asia/Tokyo", "0 30 2 * * *", id="no-dst"),
])
def test_no_dst_warning(zone: str, schedule: str) -> None:
    """No warning where no fire meets a change."""
    assert warnings(one_task(f"timezone: {zone}", schedule)) == []


def test_day_or() -> None:
    """Both day fields restricted: the OR rule is spelled out."""
    assert warnings(one_task("", "0 0 9 1 * MON")) == [
        "t.yaml:3: task 'job': schedule: '0 0 9 1 * MON' restricts both the day of month and "
        "the weekday: it fires on the days either allows (cron's OR rule), not only on the "
        "days both do [day-or] (to mean both, keep one day field '*' and test the other in "
        "the command; or silence it with lint: {ignore: [day-or]})"]


@pytest.mark.parametrize(("extra", "schedule", "found"), [
    pytest.param("timeout: 1m", "*/10 * * * * *", True, id="longer"),
    pytest.param("timeout: 5s", "*/10 * * * * *", False, id="shorter"),
    pytest.param("timeout: 1m\nmax_running: 3", "*/10 * * * * *", False, id="parallel"),
    pytest.param("timeout: 2h", "@every 1h", True, id="every"),
])
def test_timeout_longer_than_the_gap(extra: str, schedule: str, found: bool) -> None:
    """A timeout longer than the gap between fires, with max_running 1."""
    codes = [w for w in warnings(one_task(extra, schedule)) if "[timeout]" in w]
    assert bool(codes) == found
    if found:
        assert codes[0].startswith("t.yaml:5: task 'job': timeout: ")


def test_overrun_from_the_usual_duration() -> None:
    """@every shorter than the usual run, from the history's durations."""
    text = one_task("", "@every 10s")
    assert warnings(text) == []
    assert warnings(text, durations={"job": 30.0}) == [
        "t.yaml:3: task 'job': schedule: '@every 10s' is shorter than the task's usual run "
        "time (30s, from the history) with max_running: 1: most fires find a run going on "
        "[overrun] (lengthen the interval, or raise max_running; or silence it with lint: "
        "{ignore: [overrun]})"]
    assert warnings(text, durations={"job": 3.0}) == []


def test_duplicate() -> None:
    """Same command and schedule: the second names the first."""
    found = warnings("""\
        tasks:
          - {name: a, schedule: "@hourly", command: ["/bin/true"]}
          - {name: b, schedule: "@hourly", command: ["/bin/true"]}
          - {name: c, schedule: "@hourly", command: ["/bin/true"], cwd: /}
        """)
    assert found == [
        "t.yaml:3: task 'b': command: the same command and schedule as task 'a' (line 2): "
        "each fire runs it twice [duplicate] (remove one of them; or silence it with lint: "
        "{ignore: [duplicate]})"]


def test_hosts_against_the_registry() -> None:
    """An entry matching no host of the cluster; addresses checked when beats carry them."""
    known = [HostIdentity(hostnames=frozenset({"web-1"}),
                          addresses=frozenset({ipaddress.ip_address("10.0.0.5")}))]
    text = one_task('hosts: ["web-*", "db-*", "10.0.0.0/24", "10.9.0.0/16"]')
    found = [w for w in warnings(text, known_hosts=known) if "[hosts]" in w]
    assert [w.split(": ", 3)[3].split(" matches")[0] for w in found] == [
        "'db-*'", "'10.9.0.0/16'"]
    assert found[0].startswith("t.yaml:5: task 'job': hosts: ")
    assert [w for w in warnings(text) if "[hosts]" in w] == []  # no registry: not checked


def test_missing_program() -> None:
    """The cwd/program check is a lint warning like the others."""
    assert warnings(one_task("cwd: /no/such/dir")) == [
        "t.yaml:5: task 'job': cwd: /no/such/dir is not a directory on this host [missing] "
        "(install it, or restrict the task with hosts:; or silence it with lint: "
        "{ignore: [missing]})"]


@pytest.mark.parametrize("ignore", ["[dst]", "[all]", "[day-or, dst]"])
def test_lint_ignore_silences(ignore: str) -> None:
    """lint: {ignore: [...]} silences those codes for that task only."""
    assert warnings(one_task(f"timezone: Europe/Paris\nlint: {{ignore: {ignore}}}",
                             "0 30 2 * * *")) == []


@pytest.mark.parametrize(("value", "message"), [
    pytest.param("{ignore: [dts]}", "t.yaml:5: task 'job': lint: ignore: unknown warning "
                 "code 'dts'; known: dst, day-or, timeout, overrun, duplicate, hosts, "
                 "missing, all", id="unknown-code"),
    pytest.param("{skip: [dst]}", "t.yaml:5: task 'job': lint: unknown key 'skip'; the one "
                 "key is ignore", id="unknown-key"),
    pytest.param("[dst]", "t.yaml:5: task 'job': lint: must be a mapping such as "
                 "{ignore: [dst]}", id="not-a-mapping"),
])
def test_lint_key_errors(value: str, message: str) -> None:
    """A bad lint: value is a config error naming file, line and field."""
    with pytest.raises(ConfigError) as raised:
        warnings(one_task(f"lint: {value}"))
    assert [str(p) for p in raised.value.problems] == [message]


def test_an_http_tasks_timeout_longer_than_the_gap() -> None:
    found = warnings('tasks:\n  - name: ping\n    schedule: "*/30 * * * * *"\n'
                     '    http: {url: "http://127.0.0.1:9/", timeout: 2m}\n')
    assert len(found) == 1
    assert "http.timeout: 2m lets a run outlast the 30s between fires" in found[0]
