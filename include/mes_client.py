"""The MES side of the production-unit flow: trigger the ``blockchain_production_unit_update`` DAG.

In the original MES, the PATCH view of a production unit saved the unit and then called the
gateway itself. Now the view saves the unit and asks Airflow to run the DAG, through Airflow 3's
public REST API:

1. ``POST {base_url}/auth/token`` with ``{"username", "password"}`` returns ``{"access_token"}``
   (a JWT; kept in memory and renewed once if Airflow answers 401 later);
2. ``POST {base_url}/api/v2/dags/blockchain_production_unit_update/dagRuns`` with
   ``{"dag_run_id": str, "logical_date": null, "conf": {"production_unit_id": int, "status": str,
   "process_name": str}}`` returns the new run, whose ``dag_run_id`` is returned.

:func:`patch_production_unit` is the PATCH view: it saves the unit and notes the change under the
run id it then triggers, so the unit's runs apply its changes in the order the MES made them,
whichever order they start in (:mod:`include.mes.unit_updates`).

A trigger that names its run id (as :func:`patch_production_unit`'s does) is sent again when
Airflow did not answer in time, could not be reached, or answered 5xx or 429: a busy API server
then neither loses the change's run nor starts it twice, since Airflow refuses a second run of one
id (409), which a repeat after an attempt Airflow may have carried out (no answer, a cut-off
answer, 5xx) reads as "that attempt started it".

Only the standard library is used. Neither the password nor the token is ever logged or shown
in an error or a ``repr``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Protocol

from include.mes.models import ProductionUnit, validate_process_name, validate_unit_id, validate_unit_status

__all__ = [
    "PRODUCTION_UNIT_UPDATE_DAG_ID",
    "MesAirflowClient",
    "MesAirflowError",
    "new_run_id",
    "patch_production_unit",
]

log = logging.getLogger(__name__)

PRODUCTION_UNIT_UPDATE_DAG_ID = "blockchain_production_unit_update"
_MAX_DETAIL = 300
#: Airflow's default ``[scheduler] allowed_run_id_pattern``, and its column's length.
_RUN_ID = re.compile(r"[A-Za-z0-9_.~:+-]{1,250}")


class MesAirflowError(RuntimeError):
    """Airflow could not be reached or refused a request.

    :ivar status: the HTTP status, if any.
    :ivar retriable: whether the same request may succeed if sent again (no answer in time, no
        connection, a cut-off answer, 5xx or 429).
    :ivar maybe_done: whether Airflow may have carried the request out all the same (no answer in
        time, a cut-off answer, 5xx).
    :ivar path: the path of the request that failed.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        *,
        retriable: bool = False,
        maybe_done: bool = False,
        path: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retriable = retriable
        self.maybe_done = maybe_done
        self.path = path


class MesAirflowClient:
    """A small client of Airflow's REST API for the MES.

    :param base_url: where Airflow's API server is, e.g. ``http://airflow:8080`` (a path prefix
        such as ``https://host/airflow`` is kept).
    :param username: an Airflow user allowed to trigger the DAG.
    :param password: that user's password.
    :param timeout: seconds per HTTP request; default 10.
    :param dag_id: the DAG to trigger; default ``blockchain_production_unit_update``.
    :param retries: how many more times a trigger that names its run id is sent after a retriable
        failure (:attr:`MesAirflowError.retriable`); default 3. A trigger without a run id is sent
        once: repeated, it could start two runs. With the defaults, a trigger Airflow never answers
        fails after about 47 s (4 x 10 s, and 1 + 2 + 4 s between).
    :param retry_wait: seconds before the first repeat, doubled before each next one; default 1.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 10.0,
        dag_id: str = PRODUCTION_UNIT_UPDATE_DAG_ID,
        retries: int = 3,
        retry_wait: float = 1.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url if isinstance(base_url, str) else "")
        if parsed.username is not None or parsed.password is not None:
            # not shown: it holds a password
            raise ValueError(
                "Invalid base_url: credentials in the URL are not accepted; give username and password"
            )
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
            raise ValueError(f"Invalid base_url {base_url!r}: expected http(s)://host[:port][/prefix]")
        if not isinstance(username, str) or not username:
            raise ValueError("Invalid username: expected a non-empty string")
        if not isinstance(password, str) or not password:
            raise ValueError("Invalid password: expected a non-empty string")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
            raise ValueError(f"Invalid timeout {timeout!r}: expected seconds, more than 0 and at most 300")
        if not isinstance(dag_id, str) or not dag_id or "/" in dag_id:
            raise ValueError(f"Invalid dag_id {dag_id!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
            raise ValueError(f"Invalid retries {retries!r}: expected an integer from 0 to 10")
        if (
            isinstance(retry_wait, bool)
            or not isinstance(retry_wait, int | float)
            or not 0 <= retry_wait <= 60
        ):
            raise ValueError(f"Invalid retry_wait {retry_wait!r}: expected seconds, from 0 to 60")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = float(timeout)
        self.dag_id = dag_id
        self.retries = retries
        self.retry_wait = float(retry_wait)
        self._token: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, prefix: str = "MES_AIRFLOW_") -> MesAirflowClient:
        """Build from ``MES_AIRFLOW_URL``, ``MES_AIRFLOW_USERNAME`` and ``MES_AIRFLOW_PASSWORD``.

        :raises ValueError: naming the variable that is missing.
        """
        values = {}
        for name in ("URL", "USERNAME", "PASSWORD"):
            value = os.environ.get(prefix + name)
            if not value:
                raise ValueError(f"Environment variable {prefix + name} is not set")
            values[name] = value
        return cls(values["URL"], values["USERNAME"], values["PASSWORD"])

    def __repr__(self) -> str:
        return f"MesAirflowClient(base_url={self.base_url!r}, username={self.username!r}, dag_id={self.dag_id!r})"

    def trigger_production_unit_update(
        self, production_unit_id: int, status: str, process_name: str, *, run_id: str | None = None
    ) -> str:
        """Start a run of the production-unit DAG for this unit and state; returns its ``dag_run_id``.

        The arguments are checked before anything is sent.

        :param run_id: the run's id (1 to 250 letters, digits and ``_.~:+-``); default ``None``,
            Airflow makes one. With one, a failed trigger is repeated (``retries``).

        :raises ValueError: naming a bad argument.
        :raises MesAirflowError: if Airflow cannot be reached or refuses (the message has its status
            and detail), after the repeats a trigger with a run id is allowed.
        """
        conf = {
            "production_unit_id": validate_unit_id(production_unit_id),
            "status": validate_unit_status(status),
            "process_name": validate_process_name(process_name),
        }
        path = f"/api/v2/dags/{urllib.parse.quote(self.dag_id, safe='')}/dagRuns"
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id is not None:
            if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
                raise ValueError(f"Invalid run_id {run_id!r:.80}: 1 to 250 of letters, digits and _.~:+-")
            body["dag_run_id"] = run_id
        attempts = 1 + (self.retries if run_id is not None else 0)
        maybe_started = False  # whether an earlier attempt may have started the run
        for attempt in range(attempts):
            try:
                answer = self._trigger_once(path, body)
                break
            except MesAirflowError as exc:
                if exc.status == 409 and maybe_started:
                    # Airflow refuses a second run of one id: the earlier attempt, whose answer
                    # was lost, started it
                    log.info("Run %s of %s was started by an earlier attempt", run_id, self.dag_id)
                    return str(run_id)
                maybe_started = maybe_started or (exc.maybe_done and exc.path == path)
                if not exc.retriable or attempt == attempts - 1:
                    if attempt:
                        raise MesAirflowError(
                            f"{exc} (after {attempt + 1} attempts)",
                            exc.status,
                            retriable=exc.retriable,
                            maybe_done=maybe_started,
                            path=path,
                        ) from None
                    raise
                wait = self.retry_wait * 2**attempt
                log.warning("%s; trying run %s again in %g s", exc, run_id, wait)
                time.sleep(wait)
        run_id = answer.get("dag_run_id") if isinstance(answer, dict) else None
        if not isinstance(run_id, str) or not run_id:
            raise MesAirflowError(f"Airflow's answer to POST {path} has no dag_run_id")
        log.info("Triggered %s run %s for production unit %s", self.dag_id, run_id, production_unit_id)
        return run_id

    def _trigger_once(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return self._post(path, body, self._bearer())
        except MesAirflowError as exc:
            if exc.status != 401:
                raise
            # The token may have expired: get a new one, once.
            return self._post(path, body, self._bearer(renew=True))

    def _bearer(self, *, renew: bool = False) -> str:
        with self._lock:
            if renew or self._token is None:
                answer = self._post("/auth/token", {"username": self.username, "password": self._password})
                token = answer.get("access_token") if isinstance(answer, dict) else None
                if not isinstance(token, str) or not token:
                    raise MesAirflowError("Airflow's answer to POST /auth/token has no access_token")
                self._token = token
            return self._token

    def _post(self, path: str, body: dict[str, Any], token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            exc.close()
            raise MesAirflowError(
                f"Airflow answered {exc.code} to POST {path}" + (f": {detail}" if detail else ""),
                exc.code,
                retriable=exc.code >= 500 or exc.code == 429,
                maybe_done=exc.code >= 500,
                path=path,
            ) from None
        except TimeoutError:
            raise self._no_answer(path) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise self._no_answer(path) from None
            # a name that does not resolve or a certificate refused will not change on a repeat
            lasting = isinstance(reason, socket.gaierror | ssl.SSLCertVerificationError)
            raise MesAirflowError(
                f"Cannot reach Airflow at {self.base_url}: {reason}", retriable=not lasting, path=path
            ) from None
        except (ConnectionError, http.client.HTTPException) as exc:
            # reset or cut off mid-answer: whether Airflow acted is unknown
            raise MesAirflowError(
                f"Airflow's answer to POST {path} was cut off ({type(exc).__name__})",
                retriable=True,
                maybe_done=True,
                path=path,
            ) from None
        try:
            return json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MesAirflowError(f"Airflow's answer to POST {path} is not JSON") from None

    def _no_answer(self, path: str) -> MesAirflowError:
        return MesAirflowError(
            f"No answer from Airflow to POST {path} within {self.timeout:g} s",
            retriable=True,
            maybe_done=True,
            path=path,
        )


def _detail(error: urllib.error.HTTPError) -> str:
    """Airflow's ``detail`` text of an error answer, shortened to one line."""
    try:
        raw = error.read(64 * 1024)
        payload = json.loads(raw.decode("utf-8"))
    except Exception:
        return ""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if detail is None:
        return ""
    text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


class _UnitStore(Protocol):
    def set_production_unit_state(
        self, unit_id: int, status: str, process_name: str, *, dag_run_id: str | None = None
    ) -> ProductionUnit: ...


def new_run_id(unit_id: int) -> str:
    """A fresh ``dag_run_id`` for a change of unit *unit_id*: ``mes__unit<id>__<32 hex>``."""
    return f"mes__unit{validate_unit_id(unit_id)}__{uuid.uuid4().hex}"


def patch_production_unit(
    repository: _UnitStore, client: MesAirflowClient, unit_id: int, status: str, process_name: str
) -> str:
    """What the MES's PATCH view of a production unit does: save the new state and note the change
    (one transaction), then trigger the DAG with the run id it noted.

    Returns the ``dag_run_id``. If the unit does not exist nothing is noted or triggered
    (:class:`~include.mes.models.ProductionUnitNotFoundError`). If the trigger fails
    (:class:`MesAirflowError`), the change stays noted: the unit's next run applies it before its own.

    :param repository: a :class:`~include.mes.repository.MesRepository`.
    :param client: the Airflow client.
    :param unit_id: the unit's id.
    :param status: its new status.
    :param process_name: its new process name.
    """
    run_id = new_run_id(unit_id)
    unit = repository.set_production_unit_state(unit_id, status, process_name, dag_run_id=run_id)
    return client.trigger_production_unit_update(unit.id, unit.status, unit.process_name, run_id=run_id)
