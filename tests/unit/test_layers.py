"""Keep docs/architecture.md's layers true: a module imports (at module level) only from
its own folder and the folders its folder may build on. (What a fresh interpreter loads
for the CLI is checked in tests/integration/test_layers_subprocess.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "torchd"
_BASE = {"core", "system"}
MAY_IMPORT: dict[str, set[str]] = {
    "core": {"core"},
    "system": _BASE,
    "config": _BASE | {"config"},
    "store": _BASE | {"store"},
    "process": _BASE | {"store", "process"},
    "engine": _BASE | {"store", "process", "engine"},
    "cluster": _BASE | {"cluster"},
    "control": _BASE | {"store", "control"},  # the engine only through control.api's ports
    "web": _BASE | {"store", "control", "web"},  # HTTP: a second transport of control
    "daemon": _BASE | {"config", "store", "process", "engine", "cluster", "control", "web",
                       "daemon"},
    "cli": _BASE | {"config", "store", "control", "cli"},  # the rest lazily, by command
    "__main__": {"cli"},
}


def _folder(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _top_level_imports(path: Path) -> set[str]:
    """Folders of the torchd modules imported at module level (lazy imports inside functions
    are allowed: they are how a command avoids loading what it does not use)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchd."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("torchd."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_is_in_a_known_folder() -> None:
    assert {_folder(p) for p in MODULES} <= set(MAY_IMPORT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_respect_layers(path: Path) -> None:
    folder = _folder(path)
    outside = _top_level_imports(path) - MAY_IMPORT[folder]
    assert outside == set(), f"{path.relative_to(PACKAGE)} ({folder}/) imports from {outside}"
