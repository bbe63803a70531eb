"""Where ``blockchain-provider reporters`` finds the reporters a deployment created.

A deployment that creates records with reporters of their own (each signing with its own token)
keeps those reporters' credentials itself. The ``reporters list`` and ``reporters rotate``
commands reach them through a :class:`ReporterRegistry` the deployment implements and names in
Airflow's configuration::

    [blockchain]
    reporter_registry = my_package.my_module.MyReporterRegistry

(or ``AIRFLOW__BLOCKCHAIN__REPORTER_REGISTRY``; see :mod:`blockchain_provider.configured`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from blockchain_provider.configured import check_interface, configured_object


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


def configured_reporter_registry() -> ReporterRegistry:
    """The registry ``[blockchain] reporter_registry`` names (built at each call: a command makes
    one).

    :raises ConfiguredObjectError: not configured, not importable, or not a registry.
    """
    registry = configured_object("reporter_registry", "ReporterRegistry")
    check_interface("reporter_registry", registry, ReporterRegistry, "reporters, credentials and set_token")
    return registry
