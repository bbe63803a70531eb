"""Every benchmark and run script imports: they run by hand or from the Makefile, not in the suite.

The imports run in a process of their own: a script sets up its environment when it is loaded
(Airflow's home, its log level), which must not leak into the test session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    f"{path.parent.name}.{path.stem}"
    for folder in ("bench", "scripts")
    for path in (ROOT / folder).glob("*.py")
    if path.stem != "__init__"
)


def test_every_script_imports(tmp_path: Path) -> None:
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "dags")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code, *SCRIPTS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(SCRIPTS) >= 10, SCRIPTS
