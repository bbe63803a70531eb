"""Airflow finds the page's plugin where a deployment looks: the provider's entry point."""

from __future__ import annotations

import json


def test_airflow_loads_the_plugin_once_without_errors(airflow_cli) -> None:
    result = airflow_cli("plugins", "-o", "json")
    plugins = [p for p in json.loads(result.stdout) if p["name"] == "blockchain_requests"]
    assert len(plugins) == 1, result.stdout
    (plugin,) = plugins
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/blockchain-requests"]
    assert "Blockchain requests" in json.dumps(plugin["external_views"])
    assert "airflow-provider-blockchain" in plugin["source"]
    assert "already registered" not in result.stdout + result.stderr
