"""YAML that does not parse, as a ConfigProblem: its line and column, the text of that line,
and a hint that fits the error, since the parser's own words seldom say what to write.

A hint is chosen by the parser's problem and the character at its mark, in libyaml's words
(the loader uses libyaml where it is installed) and in PyYAML's alike."""

from __future__ import annotations

import re

import yaml

from torchd.core.errors import ConfigProblem

# What YAML counts as a line break (a lone CR, NEL, LS and PS too): the lines marks count.
LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
BOM = "\ufeff"  # not counted in a mark's column

ALIAS_HINT = ("an unquoted '*' starts a YAML alias: quote cron expressions, as in "
              'schedule: "*/5 * * * * *"')
TAB_HINT = "YAML indents with spaces, not tabs"
INDENT_HINT = ("check this line's indentation against the lines above: the keys of a mapping "
               "align, and so do the items of a list")
COLON_HINT = "': ' inside an unquoted value starts a mapping: quote the value"
UNCLOSED_HINT = "the quote that opens here is not closed"
RESERVED_HINT = ("'{}' cannot start an unquoted value: quote it, as in "
                 'schedule: "@hourly"')
# Problems of a line indented too much or too little (libyaml's words, then PyYAML's).
_INDENTATION = ("did not find expected '-' indicator", "did not find expected key",
                "expected <block end>")


def yaml_problem(exc: yaml.YAMLError, text: str, file: str, *,
                 position_in_bytes: bool) -> ConfigProblem:
    """What a parse that raised `exc` on `text` tells the operator. `position_in_bytes`: a
    reader error's position counts UTF-8 bytes (libyaml), not characters (PyYAML)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        return _syntax_problem(exc, text, file)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML refuses: no mark
        before = (text.encode()[:exc.position].decode(errors="ignore") if position_in_bytes
                  else text[:exc.position]).removeprefix(BOM)
        breaks = list(LINE_BREAK.finditer(before))
        column = len(before) - (breaks[-1].end() if breaks else 0)
        # Its text is "unacceptable character #x0001: ...", then where, which we say.
        return ConfigProblem(file, len(breaks) + 1, None, None,
                             f"YAML error: {str(exc).splitlines()[0]}", column=column + 1,
                             source=_line(text, len(breaks)))
    return ConfigProblem(file, 1, None, None, f"YAML error: {exc}")  # no mark nor position


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, file: str) -> ConfigProblem:
    problem = str(exc.problem or exc.context)
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return ConfigProblem(file, 1, None, None, f"YAML syntax error: {problem}")
    unclosed = problem == "found unexpected end of stream" and "quoted" in str(exc.context)
    if exc.context_mark is not None and (unclosed or exc.context == "while scanning an alias"):
        mark = exc.context_mark  # the quote that opened, the '*' (not the character after it)
    source = _line(text, mark.line)
    hint = UNCLOSED_HINT if unclosed else _hint(problem, source, mark.column)
    message = f"YAML syntax error: {problem}" + (f" ({hint})" if hint else "")
    return ConfigProblem(file, mark.line + 1, None, None, message, column=mark.column + 1,
                         source=source)


def _hint(problem: str, line: str, column: int) -> str | None:
    char = line[column:column + 1]
    if char == "*" and ("alias" in problem or "alphabetic or numeric" in problem
                        or "cannot start any token" in problem):
        return ALIAS_HINT
    if "tab character" in problem or (char == "\t" and "cannot start any token" in problem):
        return TAB_HINT
    if char in ("@", "`") and "cannot start any token" in problem:
        return RESERVED_HINT.format(char)
    if problem.startswith("mapping values are not allowed"):
        # After a key on the same line, the ': ' is inside that key's value.
        return COLON_HINT if re.search(r":\s", line[:column]) else INDENT_HINT
    if problem.startswith(_INDENTATION):
        return INDENT_HINT
    return None


def _line(text: str, index: int) -> str:
    """Line `index` (from 0) of `text`, as YAML counts lines; '' past the end."""
    lines = LINE_BREAK.split(text.removeprefix(BOM), maxsplit=index + 1)
    return lines[index] if index < len(lines) else ""
