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


def test_a_scripts_scratch_airflow_home_is_made_only_when_none_is_given_and_removed_at_exit(
    tmp_path: Path,
) -> None:
    code = (
        "import os\nfrom bench.scratch_home import use_scratch_airflow_home\n"
        "use_scratch_airflow_home('bench-test-home-')\nprint(os.environ['AIRFLOW_HOME'])\n"
    )
    base = {k: v for k, v in os.environ.items() if k != "AIRFLOW_HOME"}
    env = {**base, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def home(extra: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip()

    scratch = home({})
    assert Path(scratch).parent == tmp_path and Path(scratch).name.startswith("bench-test-home-")
    assert list(tmp_path.iterdir()) == []  # removed when the script ended
    given = tmp_path / "given"
    given.mkdir()
    assert home({"AIRFLOW_HOME": str(given)}) == str(given)
    assert list(tmp_path.iterdir()) == [given]  # kept, and nothing else made
