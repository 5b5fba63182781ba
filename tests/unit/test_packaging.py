"""The files shipped in the wheel have one home each: torchd/data holds symlinks to them."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "torchd" / "data"
HOMES = {"tasks.example.yaml": "etc/tasks.example.yaml",
         "torchd.service": "systemd/torchd.service",
         "torchd-hardened.service": "systemd/torchd-hardened.service"}


def test_each_shipped_file_is_a_symlink_to_its_home() -> None:
    assert {p.name: str(p.resolve().relative_to(ROOT)) for p in DATA.iterdir()
            if p.is_symlink()} == HOMES
    assert sorted(p.name for p in DATA.iterdir()) == sorted(HOMES)


def test_every_unit_is_shipped() -> None:
    assert {f"systemd/{p.name}" for p in (ROOT / "systemd").glob("*.service")} == \
        {home for home in HOMES.values() if home.startswith("systemd/")}


def test_the_wheel_takes_the_data_folder() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    taken = pyproject["tool"]["setuptools"]["package-data"]["torchd"]
    assert "data/*" in taken
    assert {"web/templates/*", "web/static/*"} <= set(taken)
