"""The provider is installed as Airflow expects: entry point, hooks, connection type and form."""

from __future__ import annotations

import json

from blockchain_provider import get_provider_info


def test_airflow_lists_the_provider_and_its_hook(airflow_cli):
    providers = json.loads(airflow_cli("providers", "list", "-o", "json").stdout)
    ours = [p for p in providers if p["package_name"] == "airflow-provider-blockchain"]
    assert ours and ours[0]["version"] == get_provider_info()["versions"][0]
    hooks = json.loads(airflow_cli("providers", "hooks", "-o", "json").stdout)
    assert any(
        h["connection_type"] == "blockchain_token"
        and h["class"] == "blockchain_provider.hooks.kafka_blockchain.KafkaBlockchainHook"
        for h in hooks
    )


def test_connection_form_marks_the_secrets():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    ours = {name: widget for name, widget in widgets.items() if name.startswith("extra__blockchain_token__")}
    assert set(ours) >= {
        "extra__blockchain_token__agent_password",
        "extra__blockchain_token__instance_type",
        "extra__blockchain_token__echo_request_id",
        "extra__blockchain_token__topics",
        "extra__blockchain_token__late_answer_grace",
        "extra__blockchain_token__reads",
        "extra__blockchain_token__timeout",
    }
    assert ours["extra__blockchain_token__agent_password"].is_sensitive
    assert not ours["extra__blockchain_token__instance_type"].is_sensitive
    behaviour = manager.field_behaviours["blockchain_token"]
    assert behaviour["relabeling"] == {"login": "Public key", "password": "Token"}
    assert "host" in behaviour["hidden_fields"]


def test_everything_the_provider_ships_is_registered_and_importable():
    """Operators, trigger, hook and notifiers are declared in get_provider_info, and each exists."""
    import importlib
    import pkgutil

    from airflow.providers_manager import ProvidersManager
    from airflow.sdk import BaseOperator

    import blockchain_provider.operators as operators_package

    info = get_provider_info()
    declared = {m for entry in info["operators"] for m in entry["python-modules"]}
    modules = {
        f"blockchain_provider.operators.{m.name}" for m in pkgutil.iter_modules(operators_package.__path__)
    }
    exported = [getattr(operators_package, name) for name in operators_package.__all__]
    shipped = {c.__module__ for c in exported if isinstance(c, type) and issubclass(c, BaseOperator)}
    assert shipped <= modules
    assert declared == shipped
    for module in declared | {m for e in info["triggers"] for m in e["python-modules"]}:
        importlib.import_module(module)
    for path in info["notifications"]:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path
    registered = set(ProvidersManager().notification)
    assert set(info["notifications"]) <= registered


def test_the_plugin_is_declared_where_airflow_looks_for_it():
    """The providers manager's declaration and the entry point every Airflow process loads name
    the same plugin, which exists."""
    import importlib
    from importlib.metadata import entry_points

    (declared,) = get_provider_info()["plugins"]
    module, _, name = declared["plugin-class"].rpartition(".")
    plugin = getattr(importlib.import_module(module), name)
    assert plugin.name == declared["name"]
    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == declared["name"]]
    assert entry.load() is plugin


def test_the_provider_names_nothing_of_the_project() -> None:
    """Installed into another deployment, the provider imports and names none of this project's
    packages: what it needs from the MES side comes through its configured interfaces."""
    import re
    from pathlib import Path

    import blockchain_provider

    package = Path(blockchain_provider.__file__).parent
    project = re.compile(r"\b(include|dags|gateway_sandbox|local_services|scripts|blockchain_common)\.")
    imports = re.compile(
        r"^\s*(from|import)\s+(include|dags|gateway_sandbox|local_services|scripts|blockchain_common)\b"
    )
    found = []
    for path in sorted(package.rglob("*")):
        if path.suffix not in {".py", ".js", ".html", ".css"}:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if imports.match(line) or project.search(line):
                found.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert found == []
