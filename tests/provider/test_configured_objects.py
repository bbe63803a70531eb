"""The page's request store and DAG ids come from Airflow's configuration (``[blockchain]``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from blockchain_provider import request_store
from blockchain_provider.configured import ConfiguredObjectError
from blockchain_provider.request_store import (
    RequestStore,
    answer_dag_id,
    configured_request_store,
    sync_dag_id,
)

#: Stores built by :class:`CountingStore`, to check the store is built once per process.
BUILT: list[CountingStore] = []


class CountingStore:
    """A store of nothing, counting how often it is built."""

    def __init__(self) -> None:
        BUILT.append(self)

    def request_page(
        self, kind: str, status: str | None = None, *, offset: int = 0, limit: int = 25
    ) -> tuple[int, Sequence[Any]]:
        return 0, []

    def request(self, kind: str, request_id: str) -> Any | None:
        return None


class NotAStore:
    pass


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    request_store.reset_request_store()
    BUILT.clear()
    yield
    request_store.reset_request_store()


def configure(monkeypatch: pytest.MonkeyPatch, path: str | None) -> None:
    if path is None:
        monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__REQUEST_STORE", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REQUEST_STORE", path)


def test_an_unconfigured_store_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, None)
    with pytest.raises(
        ConfiguredObjectError, match=r"\[blockchain\] request_store .*AIRFLOW__BLOCKCHAIN__REQUEST_STORE"
    ):
        configured_request_store()


def test_the_configured_store_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, f"{__name__}.CountingStore")
    first = configured_request_store()
    assert isinstance(first, CountingStore) and isinstance(first, RequestStore)
    assert configured_request_store() is first and len(BUILT) == 1
    request_store.reset_request_store()
    assert configured_request_store() is not first and len(BUILT) == 2


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("no_such_package.Store", "cannot be imported"),
        (f"{__name__}.NotAStore", "built a NotAStore, which has no request_page and request methods"),
    ],
)
def test_a_wrong_store_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, path: str, says: str) -> None:
    configure(monkeypatch, path)
    with pytest.raises(ConfiguredObjectError) as raised:
        configured_request_store()
    assert repr(path) in str(raised.value) and says in str(raised.value)


def test_the_projects_store_implements_the_interface(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The MES's store is what the project configures (tests/conftest.py, compose, make run)."""
    import json

    from include.mes.request_store import MesRequestStore

    monkeypatch.setenv(
        "AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "m.db")})
    )
    configure(monkeypatch, "include.mes.request_store.MesRequestStore")
    store = configured_request_store()
    assert isinstance(store, MesRequestStore) and isinstance(store, RequestStore)
    assert store.request_page("partner") == (0, [])
    assert store.request("order", f"{1:032x}") is None
    with pytest.raises(ValueError, match="action"):
        store.request_page("action")


def test_dag_ids_default_to_the_projects_and_follow_the_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__ANSWER_DAG_ID", raising=False)
    monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__SYNC_DAG_ID", raising=False)
    assert (answer_dag_id("partner"), sync_dag_id("order")) == (
        "blockchain_partner_answer",
        "blockchain_order_sync",
    )
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__ANSWER_DAG_ID", "plant_a_{kind}_answer")
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__SYNC_DAG_ID", "plant_a_{kind}_sync")
    assert (answer_dag_id("order"), sync_dag_id("partner")) == (
        "plant_a_order_answer",
        "plant_a_partner_sync",
    )


def test_the_options_are_declared_in_the_provider_info() -> None:
    from blockchain_provider import get_provider_info

    options = get_provider_info()["config"]["blockchain"]["options"]
    assert options["request_store"]["default"] is None
    # Airflow formats a provider's default with its own variables: the braces are doubled
    assert options["answer_dag_id"]["default"].format() == request_store.DEFAULT_ANSWER_DAG_ID
    assert options["sync_dag_id"]["default"].format() == request_store.DEFAULT_SYNC_DAG_ID


def test_every_option_is_declared_and_read_from_the_configuration_before_its_old_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blockchain_provider import get_provider_info
    from blockchain_provider.configured import OPTIONS, option

    declared = get_provider_info()["config"]["blockchain"]["options"]
    assert (
        set(declared)
        == set(OPTIONS)
        >= {"request_store", "token_conn_id", "ui_airflow_api_url", "alert_email_to"}
    )
    assert declared["token_conn_id"]["default"] is None  # else the old variable would never be read
    for name in ("AIRFLOW__BLOCKCHAIN__TOKEN_CONN_ID", "BLOCKCHAIN_TOKEN_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert option("token_conn_id", "blockchain_master") == "blockchain_master"
    monkeypatch.setenv("BLOCKCHAIN_TOKEN_CONN_ID", " plant_b ")  # the name 0.2.0 read
    assert option("token_conn_id", "blockchain_master") == "plant_b"
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__TOKEN_CONN_ID", "plant_c")
    assert option("token_conn_id", "blockchain_master") == "plant_c"
    # an option that had no variable of its own is read from the configuration only
    monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__REQUEST_STORE", raising=False)
    monkeypatch.setenv("BLOCKCHAIN_REQUEST_STORE", "tests.provider.test_configured_objects.FakeStore")
    assert option("request_store") is None


def test_the_reporter_registry_is_configured_the_same_way(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from blockchain_provider.reporter_registry import ReporterRegistry, configured_reporter_registry
    from include.mes.db import engine_from_url
    from include.mes.reporter_store import MesReporterRegistry
    from include.mes.repository import MesRepository

    monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY", raising=False)
    with pytest.raises(ConfiguredObjectError, match=r"\[blockchain\] reporter_registry"):
        configured_reporter_registry()
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY", f"{__name__}.CountingStore")
    with pytest.raises(ConfiguredObjectError, match="no reporters, credentials, set_token and token methods"):
        configured_reporter_registry()
    monkeypatch.setenv(
        "AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY", "include.mes.reporter_store.MesReporterRegistry"
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MES_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "m.db")})
    )
    MesRepository(engine_from_url(f"sqlite:///{tmp_path / 'm.db'}")).create_schema()
    registry = configured_reporter_registry()
    assert isinstance(registry, MesReporterRegistry) and isinstance(registry, ReporterRegistry)
    assert list(registry.reporters()) == [] and registry.credentials("PT10") is None
    assert registry.token("PU_PT10") is None


class CountingRegistry:
    """A registry that counts how often it is built, as a database-backed one opens an engine."""

    built = 0

    def __init__(self) -> None:
        CountingRegistry.built += 1

    def reporters(self) -> list[Any]:
        return []

    def credentials(self, name: str) -> Any:
        return None

    def set_token(self, record_id: str, token: str) -> None:
        return None

    def token(self, record_id: str) -> str | None:
        return f"token-of-{record_id}" if record_id == "PU_PT10" else None


def test_the_triggerer_builds_its_reporter_registry_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every wait for an update's answer asks the same registry: none opens a database of its own."""
    from blockchain_provider.reporter_registry import reporter_token, triggerer_reads_reporter_tokens

    monkeypatch.delenv("AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY", raising=False)
    assert not triggerer_reads_reporter_tokens()
    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY", f"{__name__}.CountingRegistry")
    assert triggerer_reads_reporter_tokens()
    before = CountingRegistry.built
    assert [reporter_token("PU_PT10") for _ in range(3)] == ["token-of-PU_PT10"] * 3
    assert reporter_token("PU_PT11") is None
    assert CountingRegistry.built == before + 1


class BrokenStore:
    """A store whose construction fails with a secret in its error text."""

    def __init__(self) -> None:
        raise RuntimeError("could not connect to postgresql://mes:s3cret@db/mes")


def test_a_store_that_fails_to_build_is_named_without_its_error_text(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, f"{__name__}.BrokenStore")
    with pytest.raises(ConfiguredObjectError) as raised:
        configured_request_store()
    assert "could not be built: RuntimeError" in str(raised.value) and "s3cret" not in str(raised.value)


class FakeRegistry:
    """Two reporters; keeping a token fails when ``refuse`` is set."""

    refuse = False
    kept: ClassVar[list[tuple[str, str]]] = []

    def reporters(self) -> list[Any]:
        from blockchain_provider.reporter_registry import ReporterEntry

        return [ReporterEntry("PT10", "PU_PT10", "BLK_Rec_ProductionUnit", "02" + "ab" * 32, 1)]

    def credentials(self, name: str) -> Any:
        from blockchain_provider.reporter_registry import ReporterLogin

        return ReporterLogin("PU_PT10", "02" + "ab" * 32, "the-password") if name == "PT10" else None

    def set_token(self, record_id: str, token: str) -> None:
        if FakeRegistry.refuse:
            raise OSError("disk full")
        FakeRegistry.kept.append((record_id, token))

    def token(self, record_id: str) -> str | None:
        return None


def test_reporters_commands_go_through_the_registry(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import contextlib
    import json

    from blockchain_provider import cli
    from blockchain_provider.reporter_registry import ReporterLogin

    monkeypatch.setenv("AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY", f"{__name__}.FakeRegistry")
    assert cli.main(["reporters", "list", "--json"]) == cli.EXIT_OK
    (listed,) = json.loads(capsys.readouterr().out)["reporters"]
    assert listed["unit"] == "PT10" and listed["has_token"] is True
    assert "the-password" not in repr(ReporterLogin("r", "k", "the-password"))

    class Hook:
        def get_token(self, public_key: str, password: str) -> str:
            assert password == "the-password"
            return "fresh-token"

    monkeypatch.setattr(cli.common, "_hook", lambda args: contextlib.nullcontext(Hook()))
    monkeypatch.setattr(cli.common, "expose_connection", lambda conn_id: None)
    FakeRegistry.kept.clear()
    assert cli.main(["reporters", "rotate", "--name", "PT10", "--json"]) == cli.EXIT_OK
    assert FakeRegistry.kept == [("PU_PT10", "fresh-token")] and "fresh-token" not in capsys.readouterr().out
    assert cli.main(["reporters", "rotate", "--unit", "PT11"]) == cli.EXIT_CONFIG
    assert "PT11 has no reporter yet" in capsys.readouterr().err
    monkeypatch.setattr(FakeRegistry, "refuse", True)
    assert cli.main(["reporters", "rotate", "--name", "PT10"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "revoked the earlier ones" in err and "OSError" in err and "fresh-token" not in err
