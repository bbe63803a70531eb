"""Every benchmark and run script imports: they run by hand or from the Makefile, not in the suite."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    f"{path.parent.name}.{path.stem}"
    for folder in ("bench", "scripts")
    for path in (ROOT / folder).glob("*.py")
    if path.stem != "__init__"
)


@pytest.mark.parametrize("module", SCRIPTS)
def test_the_script_imports(module: str) -> None:
    importlib.import_module(module)
