"""The README's table of control verbs is made from the verbs' own definitions
(control.verbs.describe_verbs), so the socket, HTTP and the docs cannot drift apart."""

from __future__ import annotations

from pathlib import Path

from torchd.control.verbs import describe_verbs

README = Path(__file__).resolve().parents[2] / "README.md"


def _argument(argument: dict[str, object]) -> str:
    kind = str(argument["kind"]).replace(" | None", "")
    if argument["required"]:
        return f"`{argument['name']}` ({kind}, required)"
    return f"`{argument['name']}` ({kind}, default `{_json(argument['default'])}`)"


def _json(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def verbs_table() -> str:
    rows = ["| verb | HTTP | arguments | what it does |", "|---|---|---|---|"]
    for verb in describe_verbs():
        arguments = ", ".join(_argument(a) for a in verb["arguments"]) or "none"
        method = "POST" if verb["action"] else "GET or POST"
        rows.append(f"| `{verb['verb']}` | {method} | {arguments} | {verb['doc']} |")
    return "\n".join(rows) + "\n"


def test_the_readme_lists_every_verb_as_defined() -> None:
    table = verbs_table()
    assert table in README.read_text(), (
        "the README's verb table differs from control/verbs.py; put this in its place:\n"
        + table)
