"""The page's calls to Airflow: its REST API as the signed-in user (runs are triggered through it,
so Airflow checks them again), the DAGs' Params, and the DAG runs the page shows."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request, status

from blockchain_provider.configured import option
from blockchain_provider.request_store import (
    answer_dag_id,
    sync_dag_id,
)
from blockchain_provider.ui.auth import user_token

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: Answer runs looked at, per DAG, to show each request's latest one.
RUN_LOOKBACK = 1000


def _airflow_path_prefix() -> str:
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def airflow_api_url(request: Request) -> str:
    """Where this API server's REST API answers, seen from this process.

    ``[blockchain] ui_airflow_api_url`` when set (e.g. ``http://127.0.0.1:8080/api/v2``); otherwise
    the address of the socket this request arrived on, which is this server.
    """
    override = option("ui_airflow_api_url")
    if override:
        return override.rstrip("/")
    server = request.scope.get("server")
    if not server or server[1] is None:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "Cannot tell where Airflow's REST API listens: set [blockchain] ui_airflow_api_url",
            )
        return f"{base}/api/v2"
    from airflow.configuration import conf

    host, port = server
    host = f"[{host}]" if ":" in host else host
    # the socket's own scheme: a proxy in front may speak https while the server speaks http
    scheme = "https" if conf.get("api", "ssl_cert", fallback="") else "http"
    return f"{scheme}://{host}:{port}{_airflow_path_prefix()}/api/v2"


def _tls_settings(request: Request, url: str) -> tuple[ssl.SSLContext | None, str | None]:
    """How the call to *url* is verified: the TLS context (``None`` for plain http) and the host
    name the server's certificate must name, when it is not *url*'s own host.

    Never unverified. ``[blockchain] ui_airflow_api_url`` over https is verified against the CA
    bundle ``ui_airflow_api_ca`` (default: the system's) and its host name. The
    server's own socket over https (``[api] ssl_cert`` set) is verified against exactly that
    certificate, for the host name of ``[api] base_url``: the socket's address is not the name
    the certificate gives.
    """
    if urlsplit(url).scheme != "https":
        return None, None
    if option("ui_airflow_api_url"):
        return ssl.create_default_context(cafile=option("ui_airflow_api_ca")), None
    from airflow.configuration import conf

    host = urlsplit(conf.get("api", "base_url", fallback="") or "").hostname
    if not host:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Cannot verify this API server's certificate: set [api] base_url to its https address, "
            "or [blockchain] ui_airflow_api_url",
        )
    context = ssl.create_default_context(cafile=conf.get("api", "ssl_cert"))
    # the server's own certificate is the one trusted, whoever issued it
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context, host


def _default_api_client(request: Request) -> httpx.Client:
    import httpx

    url = airflow_api_url(request)
    context, host = _tls_settings(request, url)

    def name_the_host(call: httpx.Request) -> None:
        call.extensions["sni_hostname"] = host  # what the certificate is checked against

    return httpx.Client(
        base_url=url,
        timeout=30.0,
        verify=context if context is not None else True,
        event_hooks={"request": [name_the_host]} if host else None,
    )


#: Builds the client for Airflow's REST API; tests put one on the app in process here.
api_client_factory: Callable[[Request], httpx.Client] = _default_api_client


def trigger_run(request: Request, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/v2/dags/{dag_id}/dagRuns`` as the caller; Airflow's refusal is passed on."""
    with api_client_factory(request) as client:
        response = client.post(
            f"/dags/{quote(dag_id, safe='')}/dagRuns",
            json={"logical_date": None, "conf": conf},
            headers={"Authorization": f"Bearer {user_token(request)}"},
        )
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        log.warning("Airflow refused to trigger %s: %s %s", dag_id, response.status_code, detail)
        raise HTTPException(response.status_code, detail)
    return response.json()


def validate_params(dag_id: str, conf: dict[str, Any]) -> None:
    """Check *conf* against the DAG's own Params, as Airflow does when a run is triggered."""
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id)
    if dag is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"The DAG {dag_id} is not loaded (yet)")
    try:
        dag.params.deep_merge(conf).validate()
    except Exception as exc:  # ParamValidationError, naming the param
        raise HTTPException(422, str(exc)) from None


def run_url(dag_id: str, run_id: str) -> str:
    """The run in the grid view, relative to the UI's base URL."""
    return f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _run_json(dag_id: str, run: Any) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "run_id": run.run_id,
        "state": str(run.state.value if hasattr(run.state, "value") else run.state),
        "end_date": run.end_date.isoformat() if run.end_date else None,
        "url": run_url(dag_id, run.run_id),
    }


def latest_answer_runs(kind: str, request_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The latest answer run of each of *request_ids*, among the DAG's recent runs."""
    if not request_ids:
        return {}
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_id = answer_dag_id(kind)
    found: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(RUN_LOOKBACK)
        )
        for run in runs:
            conf = run.conf if isinstance(run.conf, dict) else {}
            request_id = conf.get("request_id")
            if request_id in request_ids and request_id not in found:
                found[request_id] = _run_json(dag_id, run)
    return found


def sync_runs(kind: str) -> dict[str, Any]:
    """The sync DAG's last successful run and its latest run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    dag_id = sync_dag_id(kind)
    with create_session() as session:
        last_success = session.scalars(
            select(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.state == DagRunState.SUCCESS)
            .order_by(DagRun.end_date.desc())
            .limit(1)
        ).first()
        latest = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).first()
        return {
            "last_success": _run_json(dag_id, last_success) if last_success else None,
            "latest": _run_json(dag_id, latest) if latest else None,
        }
