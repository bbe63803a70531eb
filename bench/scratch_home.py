"""A scratch Airflow home for a benchmark script, set before Airflow is first imported."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def use_scratch_airflow_home(prefix: str) -> None:
    """Point ``AIRFLOW_HOME`` at a new temporary folder named *prefix*..., removed when the
    process exits; a home already given (``AIRFLOW_HOME`` set) is used as it is."""
    if os.environ.get("AIRFLOW_HOME"):
        return
    home = tempfile.mkdtemp(prefix=prefix)
    os.environ["AIRFLOW_HOME"] = home
    atexit.register(shutil.rmtree, home, ignore_errors=True)
