"""The provider's ``[blockchain]`` options, and the deployment's objects they name.

What the provider needs from the deployment that installs it (where stored requests are read,
where reporters are kept) it gets through small interfaces the deployment implements and names
by a dotted path in Airflow's configuration (``airflow.cfg``, or ``AIRFLOW__BLOCKCHAIN__*``). A
configuration option rather than an entry point: the implementation is the deployment's own code,
usually beside its DAGs and not an installed distribution, and an operator sets and changes it
the way they set every other Airflow option. The options are declared in ``get_provider_info``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: The configuration section of the provider's options.
SECTION = "blockchain"


class ConfiguredObjectError(RuntimeError):
    """An object an option names cannot be built: not configured, not importable, or not what the
    option asks for. The message names the option."""


def option(key: str, default: str | None = None) -> str | None:
    """``[blockchain] <key>``, stripped; *default* when unset or blank."""
    from airflow.configuration import conf

    value = conf.get(SECTION, key, fallback=default)
    return value.strip() if isinstance(value, str) and value.strip() else default


def configured_object(key: str, what: str, path: str | None = None) -> Any:
    """Build the object that ``[blockchain] <key>`` (or *path*, read from it already) names: a
    dotted path to a class, or any callable, taking no argument. *what* names the interface in
    the errors. An error of the build itself is reported by its type only: a database's error
    text may carry connection details."""
    from airflow.sdk.module_loading import import_string

    path = path or option(key)
    if path is None:
        raise ConfiguredObjectError(
            f"No {what} is configured: set [{SECTION}] {key} (AIRFLOW__{SECTION.upper()}__{key.upper()}) "
            f"to the dotted path of the deployment's {what} class"
        )
    try:
        factory = import_string(path)
    except ImportError as exc:
        raise ConfiguredObjectError(f"[{SECTION}] {key} {path!r} cannot be imported: {exc}") from None
    try:
        return factory()
    except Exception as exc:
        log.exception("[%s] %s %r could not be built", SECTION, key, path)
        raise ConfiguredObjectError(
            f"[{SECTION}] {key} {path!r} could not be built: {type(exc).__name__} (see the log)"
        ) from None


def check_interface(key: str, built: Any, interface: type, methods: str) -> None:
    """Refuse *built* unless it has the methods of *interface* (a runtime-checkable protocol)."""
    if not isinstance(built, interface):
        raise ConfiguredObjectError(
            f"[{SECTION}] {key} {option(key)!r} built a {type(built).__name__}, which has no {methods} methods"
        )
