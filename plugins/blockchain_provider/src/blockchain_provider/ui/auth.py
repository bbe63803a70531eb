"""Who may do what on the "Blockchain requests" page: the signed-in user, resolved as Airflow's own
API resolves it, and the configured auth manager's answer per DAG."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from blockchain_provider.request_store import (
    answer_dag_id,
    sync_dag_id,
)

COOKIE_NAME_JWT_TOKEN = "_token"  # Airflow's (base_auth_manager.COOKIE_NAME_JWT_TOKEN)


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


def capabilities(user: Any, kind: str) -> dict[str, bool]:
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
