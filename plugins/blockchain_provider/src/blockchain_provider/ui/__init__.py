"""The "Blockchain requests" page of the Airflow UI: partner and order requests, answered in one click.

:class:`BlockchainRequestsPlugin` registers, through Airflow 3's plugin interface, a FastAPI app
mounted by the API server under ``/blockchain-requests`` (:mod:`blockchain_provider.ui.api`) and an
external view that puts the page in the UI's navigation (shown in an iframe at
``/plugin/blockchain-requests``). The provider declares the plugin in its ``airflow.plugins``
entry point, so it loads wherever the provider is installed.

This module imports nothing of Airflow's API server: every process that loads plugins (scheduler,
workers, DAG processor) imports it, and only the API server serves the app.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from blockchain_provider.ui.api import URL_PREFIX, app

__all__ = ["BlockchainRequestsPlugin"]


class BlockchainRequestsPlugin(AirflowPlugin):
    """Adds the "Blockchain requests" page (API and view) to Airflow's UI."""

    name = "blockchain_requests"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Blockchain requests"}]
    external_views = [
        {
            "name": "Blockchain requests",
            # relative to the UI's <base href>, so it follows Airflow's base_url
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "blockchain-requests",
            "destination": "nav",
            "nav_top_level": True,
            "icon": URL_PREFIX.lstrip("/") + "/static/icon.svg",
        }
    ]
