"""The FastAPI app behind the "Blockchain requests" page, mounted by Airflow's API server.

Routes (under ``/blockchain-requests``):

``GET /``                                         the page (HTML; the data comes from the API below)
``GET /static/{name}``                            its script, style sheet and icon
``GET /api/kinds``                                 the request kinds this user may read
``GET /api/requests?kind=&status=&page=&page_size=``  one page of a kind's requests
``GET /api/requests/{kind}/{request_id}``         one request, whatever its status
``POST /api/requests/{kind}/{request_id}/answer`` ``{"decision": "accept"|"reject"}``: trigger the answer DAG
``POST /api/sync/{kind}``                         trigger the kind's sync DAG

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
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict

from blockchain_provider.configured import ConfiguredObjectError, option
from blockchain_provider.request_store import (
    RequestStore,
    answer_dag_id,
    configured_request_store,
    page_columns,
    reset_request_store,
    sync_dag_id,
)
from blockchain_provider.ui.airflow_api import (
    latest_answer_runs,
    run_url,
    sync_runs,
    trigger_run,
    validate_params,
)
from blockchain_provider.ui.auth import UserDep, _require, capabilities, is_authorized, json_only
from blockchain_provider.ui.kinds import KindDep, page_kinds
from blockchain_provider.ui.rows import rows_json

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

URL_PREFIX = "/blockchain-requests"
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
    """The token connection whose agent the page answers for (``[blockchain] token_conn_id``)."""
    return option("token_conn_id", "blockchain_master")


# ----------------------------------------------------------------------------- data sources


def request_store() -> RequestStore:
    """The deployment's store of requests (``[blockchain] request_store``), built once per API
    server process; 503 when it is not configured or cannot be built."""
    try:
        return configured_request_store()
    except ConfiguredObjectError as exc:
        # a store that fails to build is one too: configured_object logs it and names its type
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


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
        description="The requests the ledger addresses to the MES, answered through the answer DAGs.",
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
            any(capabilities(user, kind)["view"] for kind in page_kinds()),
            "read blockchain requests (read access to a sync or answer DAG of theirs)",
        )
        return Response(_static("index.html"), media_type="text/html; charset=utf-8")

    @api.get("/static/{name}")
    def static(name: str, user: UserDep) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
        return Response(_static(name), media_type=STATIC_FILES[name])

    @api.get("/api/kinds")
    def kinds(user: UserDep) -> list[dict[str, str]]:
        """The request kinds this user may read, in their declared order: the page's kind filter."""
        readable = [kind for kind in page_kinds().values() if capabilities(user, kind.name)["view"]]
        return [{"name": kind.name, "label": kind.label} for kind in readable]

    @api.get("/api/requests")
    def list_requests(
        user: UserDep,
        kind: KindDep,
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
        columns = page_columns(store, kind)
        rows = rows_json(kind, items, agent, can, columns)
        return {
            "kind": kind,
            # the kind's own columns, as the store names them
            "columns": columns,
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

    def stored_request(kind: str, request_id: str) -> Any:
        """The MES's request *request_id* of *kind*: 422 for an id out of its format, 404 when the
        MES has none."""
        try:
            item = request_store().request(kind, request_id)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        if item is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No {kind} request {request_id} in the MES")
        return item

    @api.get("/api/requests/{kind}/{request_id}")
    def one_request(kind: KindDep, request_id: str, user: UserDep) -> dict[str, Any]:
        """One request, whatever its status: the page follows the rows it answered."""
        can = capabilities(user, kind)
        _require(can["view"], f"read {kind} requests (read access to {sync_dag_id(kind)})")
        item = stored_request(kind, request_id)
        (row,) = rows_json(kind, [item], mes_agent(), can, page_columns(request_store(), kind))
        return row

    @api.post(
        "/api/requests/{kind}/{request_id}/answer",
        status_code=status.HTTP_201_CREATED,
        dependencies=[Depends(json_only)],
    )
    def answer(
        kind: KindDep, request_id: str, body: AnswerBody, request: Request, user: UserDep
    ) -> dict[str, Any]:
        dag_id = answer_dag_id(kind)
        _require(is_authorized(user, dag_id, "POST", run=True), f"trigger {dag_id}")
        conf = {"request_id": request_id, "decision": body.decision}
        validate_params(dag_id, conf)
        item = stored_request(kind, request_id)
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
    def sync(kind: KindDep, request: Request, user: UserDep) -> dict[str, Any]:
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
