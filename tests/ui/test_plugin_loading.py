"""Airflow finds the page's plugin where a deployment looks: the provider's entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_airflow_loads_the_plugin_once_without_errors() -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run([airflow, "plugins", "-o", "json"], capture_output=True, text=True, check=True)
    plugins = [p for p in json.loads(result.stdout) if p["name"] == "blockchain_requests"]
    assert len(plugins) == 1, result.stdout
    (plugin,) = plugins
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/blockchain-requests"]
    assert "Blockchain requests" in json.dumps(plugin["external_views"])
    assert "airflow-provider-blockchain" in plugin["source"]
    assert "already registered" not in result.stdout + result.stderr
