"""`${NAME}` in an HTTP task's URL, headers and body, replaced at run time from the task's
`env` and the daemon's environment, so that secrets stay out of the task file. `$${`
stands for a literal `${`. Pure: the caller passes the environment."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$\{|\$\{")
MASK = "***"
MIN_MASKED = 4  # shorter values are not masked in what a server sends back: "1" is no secret


class Unresolved(Exception):
    """A `${NAME}` with no value: the request is not made (it would send the literal)."""

    def __init__(self, where: str, names: Iterable[str]) -> None:
        self.names = tuple(dict.fromkeys(names))
        listed = ", ".join(f"${{{name}}}" for name in self.names)
        super().__init__(f"{where}: {listed} not set (neither in the task's env nor in the "
                         "daemon's environment)")


def reference_problem(text: str) -> str | None:
    """Why `text` holds a `${` that is not a reference `${NAME}`, or None (checked at load)."""
    for match in _REFERENCE.finditer(text):
        if match.group(0) == "${":
            return ("'${' starts no ${NAME} (a name is letters, digits and '_', not "
                    "starting with a digit); write $${ for a literal '${'")
    return None


def references(text: str) -> list[str]:
    """The names `text` refers to, in order (a `$${NAME}` is literal text, no reference)."""
    return [m.group(2) for m in _REFERENCE.finditer(text) if m.group(2) and not m.group(1)]


def substitute(text: str, env: Mapping[str, str], where: str,
               used: dict[str, str] | None = None) -> str:
    """`text` with each `${NAME}` replaced by env[NAME] and `$${` by `${`; Unresolved naming
    every name without a value. The names replaced go into `used` (name -> value)."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        literal, name = match.group(1), match.group(2)
        if name is None:
            return "${"  # `$${`; a bare `${` was refused at load
        if literal:
            return "${" + name + "}"
        value = env.get(name)
        if value is None:
            missing.append(name)
            return ""
        if used is not None:
            used[name] = value
        return value

    if "$" not in text:
        return text
    result = _REFERENCE.sub(replace, text)
    if missing:
        raise Unresolved(where, missing)
    return result


class Masker:
    """Hides the values put in by substitution wherever text the daemon keeps (the task
    log, the history's reason, its own log) could echo them: an error message quoting the
    URL, a server sending a header back."""

    __slots__ = ("_secrets",)

    def __init__(self, values: Iterable[str]) -> None:
        # Longest first, so a value holding a shorter one is hidden whole.
        self._secrets = sorted({v for v in values if len(v) >= MIN_MASKED}, key=len,
                               reverse=True)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def data(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret.encode(), MASK.encode())
        return data
