"""HTTP tasks' keys (`http:` instead of `command:`) and `${NAME}` substitution."""

from __future__ import annotations

import re
import textwrap

import pytest

from torchd.config.loader import parse_config
from torchd.core.envsubst import Masker, Unresolved, reference_problem, references, substitute
from torchd.core.errors import ConfigError
from torchd.core.model import HttpCall

KNOWN = ("url, method, headers, body, timeout, expect_status, expect_body, tls_verify, "
         "max_log_bytes")


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text).encode(), "t.yaml", identity=None)
    return [str(p) for p in caught.value.problems]


def http_task(body: str) -> str:
    return ('tasks:\n  - name: job\n    schedule: "@hourly"\n'
            + textwrap.indent(textwrap.dedent(body), "    "))


def test_every_key_becomes_the_spec() -> None:
    config = parse_config(http_task("""\
        env: {REGION: eu}
        http:
          url: "https://api.example.com/${REGION}/ping"
          method: POST
          headers: {Authorization: "Bearer ${API_TOKEN}", X-Tag: torchd}
          body: '{"ping": "$${literal}"}'
          timeout: 5s
          expect_status: [200-299, 304]
          expect_body: '"status": *"ok"'
          tls_verify: false
          max_log_bytes: 1KB
        """).encode(), "t.yaml", identity=None)
    (task,) = config.tasks
    assert task.command == ()
    assert task.http == HttpCall(
        url="https://api.example.com/${REGION}/ping", method="POST",
        headers=(("Authorization", "Bearer ${API_TOKEN}"), ("X-Tag", "torchd")),
        body='{"ping": "$${literal}"}', timeout=5.0, expect_status=((200, 299), (304, 304)),
        expect_body=re.compile('"status": *"ok"'), tls_verify=False, max_log_bytes=1024)


def test_a_url_alone_takes_the_defaults() -> None:
    config = parse_config(http_task("http: http://127.0.0.1:8080/health\n").encode(),
                          "t.yaml", identity=None)
    call = config.tasks[0].http
    assert call == HttpCall(url="http://127.0.0.1:8080/health")
    assert (call.method, call.timeout, call.expect_status, call.tls_verify,
            call.max_log_bytes) == ("GET", 30.0, ((200, 299),), True, 65536)


def test_the_same_text_makes_an_equal_spec() -> None:
    """The reload diff compares specs: a compiled expect_body must compare by its text."""
    text = http_task("http: {url: 'http://h/', expect_body: 'o+k'}\n").encode()
    first = parse_config(text, "t.yaml", identity=None).tasks[0]
    assert first == parse_config(text, "t.yaml", identity=None).tasks[0]


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param('command: "true"\nhttp: http://h/\n',
                 "t.yaml:5: task 'job': http: give either command or http, not both",
                 id="both"),
    pytest.param("http: ftp://h/x\n",
                 "t.yaml:4: task 'job': http: url: 'ftp://h/x' is not an http:// or https:// "
                 "URL", id="scheme"),
    pytest.param("http: {url: 'http:///x'}\n",
                 "t.yaml:4: task 'job': http: url: 'http:///x' is not an http:// or https:// "
                 "URL", id="no-host"),
    pytest.param("http: {url: 'http://h/a b'}\n",
                 "t.yaml:4: task 'job': http: url: a URL must not contain spaces (write them "
                 "as %20)", id="space"),
    pytest.param("http: {method: GET}\n", "t.yaml:4: task 'job': http: 'url' is required",
                 id="no-url"),
    pytest.param("http: {url: 'http://h/', methd: POST}\n",
                 f"t.yaml:4: task 'job': http: unknown key 'methd' (did you mean 'method'?); "
                 f"known: {KNOWN}", id="unknown-key"),
    pytest.param("http: {url: 'http://h/', method: post}\n",
                 "t.yaml:4: task 'job': http: method: 'post' is not one of: GET, HEAD, POST, "
                 "PUT, PATCH, DELETE, OPTIONS (did you mean POST?)", id="method-case"),
    pytest.param("http: {url: 'http://h/', headers: [a]}\n",
                 "t.yaml:4: task 'job': http: headers: expected a mapping of Name: value, got "
                 "a list", id="headers-list"),
    pytest.param("http: {url: 'http://h/', headers: {'X Y': z}}\n",
                 "t.yaml:4: task 'job': http: headers: 'X Y' is not a header name (letters, "
                 "digits and !#$%&'*+.^_`|~-)", id="header-name"),
    pytest.param("http: {url: 'http://h/', headers: {X: \"a\\nb\"}}\n",
                 "t.yaml:4: task 'job': http: headers: X: a header value must be one line",
                 id="header-newline"),
    pytest.param("http: {url: 'http://h/', body: 3}\n",
                 "t.yaml:4: task 'job': http: body: expected text, got a number (3); quote it "
                 "if you mean the text: '3'", id="body-number"),
    pytest.param("http: {url: 'http://h/', expect_status: [200-299, 99, 300-200]}\n",
                 "t.yaml:4: task 'job': http: expect_status: item 2: expected a status code "
                 "such as 200 or a range such as 200-299, got a number (99)\n"
                 "t.yaml:4: task 'job': http: expect_status: item 3: '300-200' is not a "
                 "status code or a rising range from 100 to 599", id="status"),
    pytest.param("http: {url: 'http://h/', expect_status: []}\n",
                 "t.yaml:4: task 'job': http: expect_status: must not be an empty list",
                 id="status-empty"),
    pytest.param("http: {url: 'http://h/', expect_body: '(ok'}\n",
                 "t.yaml:4: task 'job': http: expect_body: not a valid regular expression: "
                 "missing ), unterminated subpattern at position 0", id="regex"),
    pytest.param("http: {url: 'http://h/', timeout: 0}\n",
                 "t.yaml:4: task 'job': http: timeout: must be more than 0", id="timeout"),
    pytest.param("http: {url: 'http://h/', tls_verify: no}\n",
                 "t.yaml:4: task 'job': http: tls_verify: write true or false, not 'no'",
                 id="tls-verify"),
    pytest.param("http: {url: 'http://h/', max_log_bytes: 0}\n",
                 "t.yaml:4: task 'job': http: max_log_bytes: expected a size above 0 such as "
                 "10MB, 512KB or 1048576, got a number (0)", id="max-log-bytes"),
    pytest.param("http: 'http://h/${1X}'\n",
                 "t.yaml:4: task 'job': http: url: '${' starts no ${NAME} (a name is letters, "
                 "digits and '_', not starting with a digit); write $${ for a literal '${'",
                 id="bad-reference"),
    pytest.param("http: [http://h/]\n",
                 f"t.yaml:4: task 'job': http: expected a URL or a mapping of {KNOWN}, got a "
                 "list", id="list"),
    pytest.param("http: http://h/\ntimeout: 5s\n",
                 "t.yaml:5: task 'job': timeout: an HTTP task runs no process; use "
                 "http.timeout", id="task-timeout"),
    pytest.param("http: http://h/\ncwd: /tmp\n",
                 "t.yaml:5: task 'job': cwd: an HTTP task runs no process", id="cwd"),
])
def test_http_problems(body: str, expected: str) -> None:
    """Each bad key of an HTTP task is reported with file, line, task and field."""
    assert problems(http_task(body)) == expected.split("\n")


def test_a_daemon_type_http_task_is_refused() -> None:
    assert problems("tasks:\n  - {name: job, type: daemon, http: 'http://h/'}\n") == [
        "t.yaml:2: task 'job': http: a daemon task keeps a process running; an HTTP task "
        "takes a schedule (type: cron)"]


ENV = {"TOKEN": "s3cret-token", "HOST": "example.com"}


@pytest.mark.parametrize(("template", "expected"), [
    ("https://${HOST}/x?t=${TOKEN}", "https://example.com/x?t=s3cret-token"),
    ("no references", "no references"),
    ("$${TOKEN} stays", "${TOKEN} stays"),
    ("$${ alone", "${ alone"),
    ("$HOST and $$ are not references", "$HOST and $$ are not references"),
])
def test_substitution(template: str, expected: str) -> None:
    assert substitute(template, ENV, "url") == expected


def test_every_unset_name_is_named_once() -> None:
    with pytest.raises(Unresolved) as caught:
        substitute("${A}/${TOKEN}/${B}/${A}", ENV, "header Authorization")
    assert str(caught.value) == ("header Authorization: ${A}, ${B} not set (neither in the "
                                 "task's env nor in the daemon's environment)")


def test_substitution_tells_what_it_used() -> None:
    used: dict[str, str] = {}
    substitute("${HOST} $${TOKEN}", ENV, "url", used)
    assert used == {"HOST": "example.com"}
    assert references("${HOST} $${TOKEN} ${X}") == ["HOST", "X"]


@pytest.mark.parametrize(("text", "problem"), [
    ("${OK} $${", None),
    ("${", "'${' starts no ${NAME}"),
    ("${A-B}", "'${' starts no ${NAME}"),
])
def test_reference_problems(text: str, problem: str | None) -> None:
    found = reference_problem(text)
    assert (found if found is None else found[:len("'${' starts no ${NAME}")]) == problem


def test_masker_hides_secrets_but_not_short_values() -> None:
    masker = Masker(["s3cret-token", "s3cret", "1"])
    assert masker.text("a s3cret-token, s3cret, 1") == "a ***, ***, 1"
    assert masker.data(b"Bearer s3cret-token") == b"Bearer ***"
