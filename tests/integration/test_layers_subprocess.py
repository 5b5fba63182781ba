"""What a fresh interpreter loads: the CLI module keeps out of the engine's layers (the
static layer rules are in tests/unit/test_layers.py)."""

from __future__ import annotations

import subprocess
import sys


def _modules_loaded_by(code: str) -> set[str]:
    probe = (f"import sys; {code}; "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('torchd.') "
             "or m == 'asyncio')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True)
    return set(result.stdout.split())


def test_the_cli_module_does_not_load_the_engine() -> None:
    """`torchd check` stays instant: the CLI module does not pull in the engine, the
    process code or asyncio."""
    loaded = _modules_loaded_by("import torchd.cli.main")
    assert {m for m in loaded if m == "asyncio" or m.split(".")[1] in
            ("engine", "process", "daemon", "cluster")} == set()
