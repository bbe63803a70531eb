"""The FastAPI app behind the "Blockchain requests" page, mounted by Airflow's API server.

Routes (under ``/blockchain-requests``):

``GET /``                                         the page (HTML; the data comes from the API below)
``GET /static/{name}``                            its script, style sheet and icon
``GET /api/requests?kind=&status=&page=&page_size=``  one page of partner or order requests
``GET /api/requests/{kind}/{request_id}``         one request, whatever its status
``POST /api/requests/{kind}/{request_id}/answer`` ``{"decision": "accept"|"reject"}``: trigger the answer DAG
``POST /api/sync/{kind}``                         trigger the partner or order sync DAG

Every route needs a signed-in user (the UI's ``_token`` cookie, or an ``Authorization: Bearer``
JWT) and asks Airflow's auth manager, whichever is configured (simple, FAB, ...):

* reading *kind* requests: read access to the kind's sync or answer DAG (``[blockchain]
  sync_dag_id`` and ``answer_dag_id``, see :mod:`blockchain_provider.request_store`);
* answering: permission to trigger the answer DAG (create a DAG run of it);
* syncing: permission to trigger the sync DAG;
* a run's state is shown only to who may read that DAG's runs.

Answers and syncs are triggered through Airflow's own REST API (``POST /api/v2/dags/{dag_id}/dagRuns``)
with the caller's JWT, so Airflow checks the permission again, validates the Params and records the
run as the user's. Before that, the answer is validated against the answer DAG's own Params (as
serialized by the DAG processor), and the MES row must be OPEN and addressed to this MES.

Nothing is rendered here from the ledger's data: the page's script builds every element with
``textContent``, and the HTML carries a strict Content-Security-Policy.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from blockchain_provider.configured import ConfiguredObjectError
from blockchain_provider.request_kinds import REQUEST_KINDS
from blockchain_provider.request_store import (
    RequestStore,
    answer_dag_id,
    configured_request_store,
    reset_request_store,
    sync_dag_id,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

URL_PREFIX = "/blockchain-requests"
Kind = Literal["partner", "order"]
KINDS: tuple[Kind, ...] = ("partner", "order")
#: Answer runs looked at, per DAG, to show each request's latest one.
RUN_LOOKBACK = 1000
COOKIE_NAME_JWT_TOKEN = "_token"  # Airflow's (base_auth_manager.COOKIE_NAME_JWT_TOKEN)
ACTIVE_RUN_STATES = frozenset({"queued", "running"})

STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def token_conn_id() -> str:
    return os.environ.get("BLOCKCHAIN_TOKEN_CONN_ID", "blockchain_master")


# ----------------------------------------------------------------------------- data sources


def request_store() -> RequestStore:
    """The deployment's store of requests (``[blockchain] request_store``), built once per API
    server process; 503 when it is not configured or cannot be built."""
    try:
        return configured_request_store()
    except ConfiguredObjectError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    except Exception as exc:
        log.exception("The request store cannot be built")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"The request store ([blockchain] request_store) cannot be built: {type(exc).__name__}",
        ) from None


def mes_agent() -> str | None:
    """The MES agent's public key: the login of the token connection (its secrets are not read)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        return Connection.get_connection_from_secrets(token_conn_id()).login or None
    except AirflowNotFoundException:
        return None


def reset_caches() -> None:
    """Forget the request store (after its configuration or its connection changed)."""
    reset_request_store()


# ---------------------------------------------------------------------------------- security

_bearer = HTTPBearer(auto_error=False)


async def current_user(
    request: Request, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Any:
    """The signed-in user, resolved exactly as Airflow's own API resolves it (401/403 otherwise)."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, bearer)


#: The signed-in user of a route.
UserDep = Annotated[Any, Depends(current_user)]


def user_token(request: Request) -> str:
    """The caller's JWT, forwarded to Airflow's REST API so the run is triggered as them."""
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    token = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated")
    return token


def is_authorized(user: Any, dag_id: str, method: Literal["GET", "POST"], run: bool = False) -> bool:
    """Ask the configured auth manager about one DAG (``run``: its DAG runs)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    return get_auth_manager().is_authorized_dag(
        method=method,
        access_entity=DagAccessEntity.RUN if run else None,
        details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)),
        user=user,
    )


def capabilities(user: Any, kind: Kind) -> dict[str, bool]:
    answer, sync = answer_dag_id(kind), sync_dag_id(kind)
    return {
        "view": is_authorized(user, sync, "GET") or is_authorized(user, answer, "GET"),
        "answer": is_authorized(user, answer, "POST", run=True),
        "sync": is_authorized(user, sync, "POST", run=True),
        "answer_runs": is_authorized(user, answer, "GET", run=True),
        "sync_runs": is_authorized(user, sync, "GET", run=True),
    }


def json_only(request: Request) -> None:
    """Refuse a POST that is not JSON: a page of another site cannot send one without a CORS
    preflight, which this app never grants (the session cookie is not enough to trigger runs)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "Send the request as JSON (Content-Type: application/json)",
        )


def _require(allowed: bool, what: str) -> None:
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Forbidden: you may not {what}")


# --------------------------------------------------------------------------------- Airflow


def _airflow_path_prefix() -> str:
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def airflow_api_url(request: Request) -> str:
    """Where this API server's REST API answers, seen from this process.

    ``BLOCKCHAIN_UI_AIRFLOW_API_URL`` when set (e.g. ``http://127.0.0.1:8080/api/v2``); otherwise
    the address of the socket this request arrived on, which is this server.
    """
    override = os.environ.get("BLOCKCHAIN_UI_AIRFLOW_API_URL")
    if override:
        return override.rstrip("/")
    server = request.scope.get("server")
    if not server or server[1] is None:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "Cannot tell where Airflow's REST API listens: set BLOCKCHAIN_UI_AIRFLOW_API_URL",
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

    Never unverified. ``BLOCKCHAIN_UI_AIRFLOW_API_URL`` over https is verified against the CA
    bundle ``BLOCKCHAIN_UI_AIRFLOW_API_CA`` (default: the system's) and its host name. The
    server's own socket over https (``[api] ssl_cert`` set) is verified against exactly that
    certificate, for the host name of ``[api] base_url``: the socket's address is not the name
    the certificate gives.
    """
    if urlsplit(url).scheme != "https":
        return None, None
    if os.environ.get("BLOCKCHAIN_UI_AIRFLOW_API_URL"):
        return ssl.create_default_context(cafile=os.environ.get("BLOCKCHAIN_UI_AIRFLOW_API_CA") or None), None
    from airflow.configuration import conf

    host = urlsplit(conf.get("api", "base_url", fallback="") or "").hostname
    if not host:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Cannot verify this API server's certificate: set [api] base_url to its https address, "
            "or BLOCKCHAIN_UI_AIRFLOW_API_URL",
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


def latest_answer_runs(kind: Kind, request_ids: set[str]) -> dict[str, dict[str, Any]]:
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


def sync_runs(kind: Kind) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------- items


def _time(epoch: int) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _order_fields(item: Any) -> dict[str, Any]:
    return {
        "type": item.type,
        "description": item.description,
        "metadata": item.metadata,
        "files": len(item.files),
    }


#: What a row shows besides the fields every request has, per kind.
_KIND_FIELDS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "partner": lambda item: {},
    "order": _order_fields,
}


def item_json(kind: Kind, item: Any, agent: str | None) -> dict[str, Any]:
    """A stored request as the page shows it: plain data, rendered as text by the page."""
    return {
        "id": getattr(item, REQUEST_KINDS[kind].id_field),
        "status": item.status,
        "issuing_agent": item.issuing_agent,
        "receiving_agent": item.receiving_agent,
        "received_at": _time(item.timestamp),
        "answered_at": _time(item.answer_timestamp),
        "addressed_to_us": agent is not None and item.receiving_agent == agent,
        **_KIND_FIELDS[kind](item),
    }


def rows_json(kind: Kind, items: list[Any], agent: str | None, can: dict[str, bool]) -> list[dict[str, Any]]:
    """The page's rows: each item with its latest answer run and whether this user may answer it."""
    rows = [item_json(kind, item, agent) for item in items]
    runs = latest_answer_runs(kind, {row["id"] for row in rows}) if can["answer_runs"] else {}
    for row in rows:
        row["run"] = runs.get(row["id"])
        row["can_answer"] = bool(can["answer"] and row["addressed_to_us"] and row["status"] == "OPEN")
    return rows


# ------------------------------------------------------------------------------------- app


class AnswerBody(BaseModel):
    """What the page posts to answer a request; validated again as the DAG's ``decision`` Param."""

    model_config = ConfigDict(extra="forbid")

    decision: str


def _static(name: str) -> bytes:
    return resources.files("blockchain_provider.ui").joinpath("static", name).read_bytes()


def create_app() -> FastAPI:
    """The app the plugin mounts at :data:`URL_PREFIX`."""
    api = FastAPI(
        title="Blockchain requests",
        description="Partner and order requests of the MES, answered through the answer DAGs.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @api.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and request.url.path.rstrip("/").endswith(
            URL_PREFIX
        ):
            # the page itself: send the browser to sign in, then back here
            from airflow.api_fastapi.app import get_auth_manager

            try:
                return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)))
            except Exception:
                log.exception("No login URL from the auth manager")
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @api.get("/", response_class=HTMLResponse)
    def page(user: UserDep) -> Response:
        _require(
            any(capabilities(user, kind)["view"] for kind in KINDS),
            "read partner or order requests (read access to their sync or answer DAGs)",
        )
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    @api.get("/static/{name}")
    def static(name: str, user: UserDep) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
        return Response(_static(name), media_type=STATIC_FILES[name])

    @api.get("/api/requests")
    def list_requests(
        user: UserDep,
        kind: Kind = "partner",
        status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=100)] = 25,
    ) -> dict[str, Any]:
        can = capabilities(user, kind)
        _require(can["view"], f"read {kind} requests (read access to {sync_dag_id(kind)})")
        store = request_store()
        try:
            total, items = store.request_page(
                kind, status_ or None, offset=(page - 1) * page_size, limit=page_size
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        agent = mes_agent()
        rows = rows_json(kind, items, agent, can)
        return {
            "kind": kind,
            "status": status_ or None,
            "page": page,
            "page_size": page_size,
            "total": total,
            "items": rows,
            "mes_agent": agent,
            "can": {"answer": can["answer"], "sync": can["sync"]},
            "answer_dag_id": answer_dag_id(kind),
            "sync_dag_id": sync_dag_id(kind),
            "sync": sync_runs(kind) if can["sync_runs"] else None,
        }

    @api.get("/api/requests/{kind}/{request_id}")
    def one_request(kind: Kind, request_id: str, user: UserDep) -> dict[str, Any]:
        """One request, whatever its status: the page follows the rows it answered."""
        can = capabilities(user, kind)
        _require(can["view"], f"read {kind} requests (read access to {sync_dag_id(kind)})")
        store = request_store()
        try:
            item = store.request(kind, request_id)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        if item is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No {kind} request {request_id} in the MES")
        (row,) = rows_json(kind, [item], mes_agent(), can)
        return row

    @api.post(
        "/api/requests/{kind}/{request_id}/answer",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(json_only)],
    )
    def answer(
        kind: Kind, request_id: str, body: AnswerBody, request: Request, user: UserDep
    ) -> dict[str, Any]:
        dag_id = answer_dag_id(kind)
        _require(is_authorized(user, dag_id, "POST", run=True), f"trigger {dag_id}")
        conf = {"request_id": request_id, "decision": body.decision}
        validate_params(dag_id, conf)
        store = request_store()
        try:
            item = store.request(kind, request_id)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        if item is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No {kind} request {request_id} in the MES")
        if item.receiving_agent != mes_agent():
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"The {kind} request {request_id} is not addressed to this MES"
            )
        if item.status != "OPEN":
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"The {kind} request {request_id} is {item.status}, not OPEN"
            )
        pending = latest_answer_runs(kind, {request_id}).get(request_id)
        if pending and pending["state"] in ACTIVE_RUN_STATES:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"The {kind} request {request_id} is being answered already (run {pending['run_id']})",
            )
        run = trigger_run(request, dag_id, conf)
        log.info("%s triggered %s for %s request %s", user.get_name(), dag_id, kind, request_id)
        return {
            "dag_id": dag_id,
            "run_id": run["dag_run_id"],
            "state": run["state"],
            "url": run_url(dag_id, run["dag_run_id"]),
        }

    @api.post("/api/sync/{kind}", status_code=status.HTTP_201_CREATED, dependencies=[Depends(json_only)])
    def sync(kind: Kind, request: Request, user: UserDep) -> dict[str, Any]:
        dag_id = sync_dag_id(kind)
        _require(is_authorized(user, dag_id, "POST", run=True), f"trigger {dag_id}")
        run = trigger_run(request, dag_id, {})
        return {
            "dag_id": dag_id,
            "run_id": run["dag_run_id"],
            "state": run["state"],
            "url": run_url(dag_id, run["dag_run_id"]),
        }

    return api


app = create_app()
