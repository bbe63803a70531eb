"""Where the provider finds the reporters a deployment created.

A deployment that creates records with reporters of their own (each signing with its own token)
keeps those reporters' credentials itself. The triggerer (to match the answer to an update a
reporter signed) and the ``reporters list`` and ``reporters rotate`` commands reach them through a
:class:`ReporterRegistry` the deployment implements and names in Airflow's configuration::

    [blockchain]
    reporter_registry = my_package.my_module.MyReporterRegistry

(or ``AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY``; see :mod:`blockchain_provider.configured`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from blockchain_provider.configured import check_interface, configured_object, option


class ReporterEntry(NamedTuple):
    """One reporter as ``reporters list`` shows it: never its token or password."""

    name: str
    record_id: str
    topic: str
    public_key: str | None  # None until the gateway answered its creation
    has_token: bool


@dataclass(frozen=True)
class ReporterLogin:
    """What ``reporters rotate`` asks the gateway a fresh token with; the password is never in
    its repr."""

    record_id: str
    public_key: str
    password: str = field(repr=False)


class ReporterRegistryError(Exception):
    """What a registry raises for what it refuses or cannot read (no such reporter, a stored
    secret it cannot decrypt). The message names the input, and nothing secret."""


@runtime_checkable
class ReporterRegistry(Protocol):
    """The reporters one deployment created. Each method raises :class:`ReporterRegistryError`
    or :class:`ValueError` (with a message naming the input, and nothing secret) for what it
    refuses or cannot read."""

    def reporters(self) -> Sequence[ReporterEntry]:
        """Every reporter, in the order to list them."""
        ...

    def credentials(self, name: str) -> ReporterLogin | None:
        """The reporter named *name*'s record, public key and password; ``None`` when there is no
        such reporter or the gateway has not answered its creation yet."""
        ...

    def set_token(self, record_id: str, token: str) -> None:
        """Keep the fresh *token* of the reporter of *record_id*, as securely as its others."""
        ...

    def token(self, record_id: str) -> str | None:
        """The token of the reporter of *record_id*; ``None`` when it has none (yet). In the
        triggerer one registry serves every wait for the life of the process: read the token when
        asked (a rotated token must take effect), do not keep it from ``__init__``."""
        ...


def configured_reporter_registry() -> ReporterRegistry:
    """The registry ``[blockchain] reporter_registry`` names (built at each call: a command makes
    one).

    :raises ConfiguredObjectError: not configured, not importable, or not a registry.
    """
    return _registry(option("reporter_registry"))


def _registry(path: str | None) -> ReporterRegistry:
    registry = configured_object("reporter_registry", "ReporterRegistry", path)
    check_interface(
        "reporter_registry", registry, ReporterRegistry, "reporters, credentials, set_token and token"
    )
    return registry


#: The triggerer's registry, built once per process and configured path: a wait for an update's
#: answer asks it for the reporter's token, and opens no database of its own.
_process_registry = functools.lru_cache(maxsize=4)(_registry)


def triggerer_reads_reporter_tokens() -> bool:
    """Whether a registry is configured, so that the triggerer can read a reporter's token, and
    an update a reporter signs may wait for its answer there."""
    return option("reporter_registry") is not None


def reporter_token(record_id: str) -> str | None:
    """The token of the reporter of *record_id*, from the registry ``[blockchain]
    reporter_registry`` names (built once per process); ``None`` when it has none."""
    return _process_registry(option("reporter_registry")).token(record_id)
