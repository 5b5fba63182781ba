"""Any bytes end in a Config or in a ConfigError whose every problem names the file and a line.

A property test mutates valid task files the way a fault campaign did (YAML 1.1 literals in
every value position, known keys added with wrong values, keys and lines removed, moved and
re-indented, characters inserted); plain tests pin the messages for the YAML 1.1 numbers
that used to crash the loader with a traceback instead of a problem.
"""

from __future__ import annotations

import copy
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchd.config.loader import DAEMON_KEYS, TASK_KEYS, parse_config
from torchd.config.yamlvalues import CLUSTER_KEYS, HISTORY_KEYS, LOG_KEYS, RETRY_KEYS
from torchd.core.errors import ConfigError, ConfigProblem

FILE = "m.yaml"

# Valid files between them giving every daemon key and most task keys, block and flow style.
# Zones of each kind: a name (cut short, Europe/London becomes Europe, a directory of the
# zone database), a POSIX rule, UTC.
CORPUS = (
    """\
    daemon:
      state_dir: /tmp/torchd-mutations
      timezone: Europe/London
      watch: false
      max_running: 4
      overlap: queue
      queue_limit: 50
      log: {max_bytes: 1MB, keep: 3, split: false, max_run_bytes: 64KB}
      history: {enabled: true, keep_days: 7, keep_runs_per_task: 50}
      hooks:
        on_failure: {webhook: {url: "http://127.0.0.1:9/x", headers: {X-A: b}, timeout: 5s}}
        on_missed: "echo missed"
      socket_group: root
      cluster: {redis: "redis://10.0.0.5:6379/0", name: prod, host_id: web-1, max_load: 0.75,
                lease_ttl: 30s}
    tasks:
      - name: report
        schedule: "0 30 1 * * *"
        command: ["/usr/bin/report", "--daily"]
        type: cron
        hosts: ["10.0.0.0/24", "127.0.0.1", "web-*"]
        max_running: 2
        env: {MODE: fast, EMPTY: ""}
        cwd: /tmp
        enabled: true
        timezone: "CET-1CEST,M3.5.0,M10.5.0/3"
        catchup: all
        starting_deadline: 1h
        overlap: queue
        queue_limit: 3
        kill_grace: 2.5
        timeout: 1m30s
        retries: {max: 3, delay: 5s, backoff: 3, max_delay: 1m}
        start_at: 2026-12-01T00:00:00Z
        end_at: "2027-12-03T00:00:00Z"
        jitter: 30s
        user: root
        group: root
        umask: "0027"
        nice: 5
        limits: {nofile: 256, cpu: 60, memory: unlimited}
        log: {split: true, max_run_bytes: 64KB}
        hooks:
          on_start: "echo hi"
          on_success: {command: [notify, ok], timeout: 5s}
        run_on: one
    """,
    """\
    daemon: {timezone: UTC, history: false}
    tasks:
      - name: once
        at: 2026-12-01T10:00:00+08:00
        command: "true"
        retries: 2
        timeout: 10
      - {name: keeper, type: daemon, command: sleep 100, max_running: 2, kill_grace: 10}
      - {name: spread, schedule: "@random 10m 20m", command: "true", jitter: 5}
      - name: every
        schedule: "@every 1m30s"
        command: "true"
        umask: 0077
        starting_deadline: 90
    """,
    """\
    tasks:
      - name: backup
        schedule: "0 0 3 * * *"
        command: /usr/local/bin/backup
        catchup: last
        overlap: replace
        hooks:
          on_success: 'touch /var/run/backup.ok'
          on_failure: {command: ["/usr/local/bin/page", "backup failed"], timeout: 30s}
      - {name: rotate, schedule: "@hourly", command: "true", hosts: [web-1], enabled: false}
    """,
)

# YAML 1.1 reads these as something other than text, or as text people do not expect.
YAML_1_1 = (
    "12:30:00", "1:30", "-1:30", "190:20:30.15", ".inf", "-.inf", ".nan", ".NaN", "0x10",
    "-0x10", "0o17", "017", "0b101", "1_000", "1__0", "1e3", "1.0e+400", "-0", "+5", "~",
    "null", "yes", "no", "on", "off", "y", "n", "2026-12-01", "2026-12-01T10:00:00",
    "0001-01-01T00:00:00+01:00", "!!binary aGVsbG8=", "!!int x", "!!float 1:30", "!!int 0x",
    "!!str 5", "!!timestamp x", "!!null x", "!!bool x",
)
# Wrong shapes, edges and characters, zones among them.
OTHER = (
    "''", '""', "[]", "{}", "[1, 2]", "[[]]", "{a: 1}", "{max: 1:30}", "-1", "0", "1",
    "99999999999999999999", "9" * 5000, "x" * 200, "x" * 300, '"a\\0b"', '"\\x01"', "\x01",
    "\x85", "\u2028", "\ufeff", "é", "😀", "1h30m", "10ms", "64KB", '"@hourly"',
    '"@every 1:30"', '"*/0 * * * * *"', "*a", "&a x", "&a [*a]", "!foo x", "0027", "unlimited",
    "http://x", "redis://x", "skip", "one", "daemon", "root", "UTC", "Mars/Base", "Europe",
    "Europe/", "../../etc/passwd", "/etc/passwd", "/dev/zero", "<+03>-3", "CET-1CEST,M3.5.0",
    "- x", "? x", "a: b", "#", "%", "@", "`", "|", ">",
)
NESTED_KEYS = (*RETRY_KEYS, *LOG_KEYS, *HISTORY_KEYS, *CLUSTER_KEYS, "on_start",
               "on_success", "on_failure", "on_missed", "command", "webhook", "url", "headers",
               "timeout", "nofile", "cpu", "memory")
KEYS = (*TASK_KEYS, *DAEMON_KEYS, *NESTED_KEYS, "tasks", "daemon", "schedul", "bogus")

Tree = str | list["Tree"] | dict[str, "Tree"]  # a scalar is kept as its YAML source text


def tree_of(text: str, node: yaml.Node) -> Tree:
    if isinstance(node, yaml.ScalarNode):
        return text[node.start_mark.index:node.end_mark.index]
    if isinstance(node, yaml.SequenceNode):
        return [tree_of(text, item) for item in node.value]
    return {str(tree_of(text, key)): tree_of(text, value) for key, value in node.value}


def render(tree: Tree, indent: int = 0) -> str:
    """Block YAML whose scalars are written exactly as given (so `1:30` stays unquoted)."""
    if isinstance(tree, str) or not tree:
        return tree if isinstance(tree, str) else ("{}" if isinstance(tree, dict) else "[]")
    pad = " " * indent
    items = tree.items() if isinstance(tree, dict) else (("-", item) for item in tree)
    lines = []
    for key, value in items:
        head = pad + (key if key == "-" and isinstance(tree, list) else f"{key}:")
        nested = isinstance(value, dict | list) and bool(value)
        lines.append(f"{head}\n{render(value, indent + 2)}" if nested
                     else f"{head} {render(value)}")
    return "\n".join(lines)


TREES = tuple(tree_of(textwrap.dedent(text), yaml.compose(textwrap.dedent(text), yaml.SafeLoader))
              for text in CORPUS)
yaml_1_1 = st.sampled_from(YAML_1_1)
literals = st.one_of(yaml_1_1, yaml_1_1, st.sampled_from(OTHER), st.text(max_size=12))


def places(tree: Tree) -> list[tuple[list[Tree] | dict[str, Tree], int | str]]:
    """Every (container, key or index) in the tree: each value position."""
    found: list[tuple[list[Tree] | dict[str, Tree], int | str]] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found.append((tree, key))
            found.extend(places(value))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found.append((tree, index))
            found.extend(places(value))
    return found


def mappings(tree: Tree) -> list[tuple[dict[str, Tree], tuple[str, ...]]]:
    """Every mapping in the file with the keys it takes: the top level's, the daemon
    section's, each task's; a nested mapping takes any nested key."""
    found: list[tuple[dict[str, Tree], tuple[str, ...]]] = []

    def visit(node: Tree, known: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            found.append((node, known))
            for value in node.values():
                visit(value, NESTED_KEYS)
        elif isinstance(node, list):
            for item in node:
                visit(item, NESTED_KEYS)

    if isinstance(tree, dict):
        found.append((tree, ("daemon", "tasks")))
        for key, value in tree.items():
            if key == "tasks" and isinstance(value, list):
                for task in value:
                    visit(task, tuple(TASK_KEYS))
            else:
                visit(value, tuple(DAEMON_KEYS) if key == "daemon" else NESTED_KEYS)
    return found


# A YAML 1.1 literal in a value position, the campaign's main finding, weighs three.
TREE_MUTATIONS = ("YAML 1.1", "YAML 1.1", "YAML 1.1", "replace", "set key", "delete", "wrap",
                  "unwrap", "rename", "duplicate")


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    tree = copy.deepcopy(draw(st.sampled_from(TREES)))
    for _ in range(draw(st.integers(1, 4))):
        mutation = draw(st.sampled_from(TREE_MUTATIONS))
        if mutation == "set key":  # a key this mapping knows (or any key), any value
            mapping, known = draw(st.sampled_from(mappings(tree)))
            mapping[draw(st.sampled_from(known) | st.sampled_from(KEYS))] = draw(literals)
            continue
        spots = places(tree)
        if mutation == "YAML 1.1":  # in any value position
            spots = [(container, key) for container, key in spots
                     if isinstance(_at(container, key), str)]
        if not spots:
            continue
        container, key = draw(st.sampled_from(spots))
        if isinstance(container, dict):
            assert isinstance(key, str)
            if mutation == "delete":
                del container[key]
            elif mutation == "rename":
                container[draw(literals)] = container.pop(key)
            else:
                container[key] = _changed(draw, mutation, container[key])
        else:
            assert isinstance(key, int)
            if mutation == "delete":
                del container[key]
            elif mutation == "duplicate":
                container.append(copy.deepcopy(container[key]))
            else:
                container[key] = _changed(draw, mutation, container[key])
    text = render(tree) + "\n"
    for _ in range(draw(st.sampled_from((0, 0, 1, 2)))):  # most break the YAML: not always
        text = _text_mutation(draw, text)
    return text.encode()


def _at(container: list[Tree] | dict[str, Tree], key: int | str) -> Tree:
    return container[key] if isinstance(container, dict) else container[int(key)]


def _changed(draw: st.DrawFn, mutation: str, value: Tree) -> Tree:
    if mutation == "wrap":
        return draw(st.sampled_from(([value], {"max": value}, {draw(literals): value})))
    if mutation == "unwrap" and isinstance(value, list | dict) and value:
        return value[0] if isinstance(value, list) else next(iter(value.values()))
    return draw(yaml_1_1 if mutation == "YAML 1.1" else literals)


def _text_mutation(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True) or [""]
    where = draw(st.integers(0, len(lines) - 1))
    mutation = draw(st.sampled_from(("delete", "duplicate", "swap", "indent", "insert",
                                     "truncate")))
    if mutation == "delete":
        del lines[where]
    elif mutation == "duplicate":
        lines.insert(where, lines[where])
    elif mutation == "swap":
        other = draw(st.integers(0, len(lines) - 1))
        lines[where], lines[other] = lines[other], lines[where]
    elif mutation == "indent":
        lines[where] = draw(st.sampled_from(("", " ", "   ", "\t"))) + lines[where].lstrip(" ")
    elif mutation == "insert":
        column = draw(st.integers(0, len(lines[where])))
        lines[where] = lines[where][:column] + draw(literals) + lines[where][column:]
    else:
        return text[:draw(st.integers(0, len(text)))]
    return "".join(lines)


def test_the_corpus_is_valid() -> None:
    """Each corpus file parses as it stands and as rendered, so mutations start from valid."""
    for text, tree in zip(CORPUS, TREES, strict=True):
        for data in (textwrap.dedent(text), render(tree) + "\n"):
            assert parse_config(data.encode(), FILE, identity=None, as_root=True).tasks


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated_files(), as_root=st.booleans())
def test_a_mutated_file_is_a_config_or_located_problems(data: bytes, as_root: bool) -> None:
    """Whatever the mutation, parsing ends in a Config or in problems with file and line."""
    found: tuple[ConfigProblem, ...] | None = None
    try:
        parse_config(data, FILE, identity=None, as_root=as_root)
    except ConfigError as exc:  # anything else fails the test, with the file that raised it
        found = exc.problems
    if found is not None:
        assert found
        assert [p for p in found
                if p.file != FILE or not isinstance(p.line, int) or p.line < 1] == []


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text).encode(), "t.yaml", identity=None, as_root=True)
    return [str(p) for p in caught.value.problems]


def task_with(key: str, value: str) -> str:
    return f'tasks:\n  - name: job\n    schedule: "@hourly"\n    command: "true"\n' \
           f"    {key}: {value}\n"


@pytest.mark.parametrize("key", ["timeout", "kill_grace", "jitter", "starting_deadline"])
@pytest.mark.parametrize(("value", "message"), [
    pytest.param("12:30:00", "YAML 1.1 reads 12:30:00 as a base-60 number (45000); write a "
                 "duration such as 12h30m", id="base-60-hms"),
    pytest.param("1:30", "YAML 1.1 reads 1:30 as a base-60 number (90); write a duration such "
                 "as 1m30s", id="base-60-ms"),
    pytest.param("-1:30", "YAML 1.1 reads -1:30 as a base-60 number (-90); a duration cannot "
                 "be negative", id="base-60-negative"),
    pytest.param("190:20:30.15", "YAML 1.1 reads 190:20:30.15 as a base-60 number "
                 "(685230.15); write a duration such as 7d22h20m30.15s", id="base-60-float"),
    pytest.param(".inf", "a duration must be finite, got .inf", id="infinity"),
    pytest.param("-.inf", "a duration must be finite, got -.inf", id="minus-infinity"),
    pytest.param(".nan", "a duration must be a finite number, got .nan (YAML 1.1 reads it as "
                 "not-a-number)", id="nan"),
    pytest.param("0x10", "YAML 1.1 reads 0x10 as a hexadecimal number (16); write it in "
                 "decimal", id="hexadecimal"),
    pytest.param("017", "YAML 1.1 reads 017 as an octal number (15); write it in decimal",
                 id="octal"),
    pytest.param("0b101", "YAML 1.1 reads 0b101 as a binary number (5); write it in decimal",
                 id="binary"),
    pytest.param("1.0e+400", "a duration must be finite, got 1.0e+400 (too large)",
                 id="overflow"),
    pytest.param("!!int x", "'x' is tagged !!int but is not a number", id="tagged-text"),
    pytest.param("-5", "a duration cannot be negative, got -5", id="negative"),
    pytest.param(f"'{'9' * 400}d'", f"a duration must be finite, got '{'9' * 37}... (401 "
                 "characters)' (too large)", id="overflow-text"),
])
def test_yaml_1_1_numbers_in_durations(key: str, value: str, message: str) -> None:
    """Each duration key refuses YAML 1.1's other readings of a number and says what it read."""
    assert problems(task_with(key, value)) == [f"t.yaml:5: task 'job': {key}: {message}"]


@pytest.mark.parametrize(("value", "seconds"), [
    pytest.param("1_000", 1000.0, id="underscores"),
    pytest.param("+5", 5.0, id="plus-sign"),
    pytest.param("2.5", 2.5, id="decimal"),
    pytest.param("-0", 0.0, id="minus-zero"),
    pytest.param("!!float 3", 3.0, id="tagged"),
    pytest.param("1h30m", 5400.0, id="units"),
])
def test_decimal_durations_still_read(value: str, seconds: float) -> None:
    """Numbers YAML 1.1 and people read alike stay accepted."""
    (task,) = parse_config(task_with("kill_grace", value).encode(), "t.yaml",
                           identity=None).tasks
    assert task.kill_grace == seconds


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(task_with("retries", "{max: 1, backoff: 1:30}"),
                 "t.yaml:5: task 'job': retries: backoff: YAML 1.1 reads 1:30 as a base-60 "
                 "number (90); write a backoff in decimal", id="backoff-base-60"),
    pytest.param(task_with("retries", "{max: 1, delay: .inf}"),
                 "t.yaml:5: task 'job': retries: delay: a duration must be finite, got .inf",
                 id="retry-delay-infinity"),
    pytest.param("daemon: {history: {keep_days: .inf}}\ntasks: []\n",
                 "t.yaml:1: daemon.history: keep_days: a number of days must be finite, got "
                 ".inf", id="keep-days-infinity"),
    pytest.param("daemon: {cluster: {redis: 'redis://x', max_load: .nan}}\ntasks: []\n",
                 "t.yaml:1: daemon.cluster: max_load: a load must be a finite number, got .nan "
                 "(YAML 1.1 reads it as not-a-number)", id="max-load-nan"),
    pytest.param("daemon: {cluster: {redis: 'redis://x', lease_ttl: 0x10}}\ntasks: []\n",
                 "t.yaml:1: daemon.cluster: lease_ttl: YAML 1.1 reads 0x10 as a hexadecimal "
                 "number (16); write it in decimal", id="lease-ttl-hexadecimal"),
    pytest.param("daemon: {hooks: {on_start: {command: x, timeout: 12:30:00}}}\ntasks: []\n",
                 "t.yaml:1: daemon.hooks: on_start: timeout: YAML 1.1 reads 12:30:00 as a "
                 "base-60 number (45000); write a duration such as 12h30m",
                 id="hook-timeout-base-60"),
    pytest.param(f"daemon: {{max_running: {'1' * 5000}}}\ntasks: []\n",
                 f"t.yaml:1: daemon.max_running: must be at most 9223372036854775807, got "
                 f"{'1' * 37}... (5000 characters)", id="integer-digits"),
    pytest.param("daemon: {queue_limit: 9223372036854775808}\ntasks: []\n",
                 "t.yaml:1: daemon.queue_limit: must be at most 9223372036854775807, got "
                 "9223372036854775808", id="integer-64-bit"),
    pytest.param("daemon: {log: {max_bytes: 8589934592GB}}\ntasks: []\n",
                 "t.yaml:1: daemon.log: max_bytes: must be at most 9223372036854775807 bytes, "
                 "got 8589934592GB", id="size-64-bit"),
    pytest.param(f"daemon: {{log: {{max_bytes: {'1' * 5000}}}}}\ntasks: []\n",
                 f"t.yaml:1: daemon.log: max_bytes: must be at most 9223372036854775807 bytes, "
                 f"got {'1' * 37}... (5000 characters)", id="size-digits"),
])
def test_numbers_elsewhere(text: str, expected: str) -> None:
    """Backoff, days, load, nested durations, counts and sizes: a problem, never a traceback."""
    assert problems(text) == [expected]


@pytest.mark.parametrize(("data", "expected"), [
    pytest.param(b"tasks:\n  - {name: a, command: \x01}\n", "t.yaml:2:24: YAML error: "
                 "unacceptable character #x0001: control characters are not allowed",
                 id="control-character"),
    pytest.param("tasks: []\n# é\r\n# \u2028\rx: \x7f\n".encode(), "t.yaml:5:4: YAML error: "
                 "unacceptable character #x007f: control characters are not allowed",
                 id="counted-as-yaml-counts-lines"),
])
def test_a_refused_character_gets_its_line(data: bytes, expected: str) -> None:
    """YAML's reader gives no mark, only an offset: the problem still says the line and
    column."""
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "t.yaml", identity=None)
    assert [str(p) for p in caught.value.problems] == [expected]
