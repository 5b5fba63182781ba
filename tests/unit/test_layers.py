"""Keep DESIGN.md's layer table true: a module imports only from its layer or below."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "torchd"
LAYERS = {
    "errors": 0, "clock": 0, "cronexpr": 0, "cronfields": 0, "localtime": 0, "durations": 0,
    "bounded": 0, "runid": 0, "procstat": 0, "fastinit": 0, "safefile": 0, "leaseguard": 0,
    "zones": 0,
    "model": 1, "hostmatch": 1, "reload": 1, "events": 1, "control.protocol": 1, "catchup": 1,
    "health": 1,
    "config": 2, "yamlvalues": 2, "runner": 2, "hostinfo": 2, "runas": 2, "tasklog": 2,
    "statedir": 2,
    "cgroups": 2,
    "scheduler": 3,
    "control.server": 4, "watcher": 4, "pidfile": 4, "children": 4, "sdnotify": 4,
    "ledger": 4, "history": 4, "logview": 4, "hooks": 4, "opstate": 4, "cluster": 4,
    "reaper": 4,
    "app": 5, "ops": 5,
    "cli": 6, "daemonize": 6, "__main__": 6, "control.client": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def _top_level_imports(path: Path) -> set[str]:
    """torchd modules imported at module level (lazy imports inside functions are allowed)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("torchd."):
            found.add(node.module.removeprefix("torchd."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("torchd.") for a in node.names
                         if a.name.startswith("torchd."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_every_module_has_a_layer() -> None:
    assert sorted(_module_name(p) for p in MODULES) == sorted(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=_module_name)
def test_imports_respect_layers(path: Path) -> None:
    name = _module_name(path)
    upward = {dep: LAYERS[dep] for dep in _top_level_imports(path)
              if dep in LAYERS and LAYERS[dep] > LAYERS[name]}
    assert upward == {}, f"{name} (layer {LAYERS[name]}) imports from higher layers"


def test_check_and_status_do_not_load_the_engine() -> None:
    """`torchd check` stays instant: the CLI module does not pull in asyncio's engine."""
    code = ("import sys, torchd.cli; "
            "print(sorted(m for m in ('torchd.scheduler', 'torchd.runner', 'torchd.app') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
