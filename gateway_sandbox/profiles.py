"""How strictly the sandbox plays the gateway: its profiles.

``sandbox`` (the default) forgives: it confirms an identical re-creation, answers the optional
read topics and honours ``start``. ``original`` behaves as the sources allow the original gateway
to: it refuses any second creation of a record type or record, has no read topic (a read gets
no answer), and answers every write after a delay (default 1 s, concurrently, as a chain that
commits blocks would), so a client's deferred waits are its normal path. ``ignore_start`` (a
flag of either profile) answers every list request with its first page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gateway_sandbox import wire

#: The topics a gateway without reads does not serve.
READ_TOPICS = (wire.RECORD_TYPE_GET, wire.RECORD_GET)


@dataclass(frozen=True)
class Profile:
    """What the gateway forgives and how fast it answers.

    :param name: the profile's name.
    :param refuse_recreation: answer ``error`` to the creation of a record type or record that
        exists, identical or not.
    :param read_topics: serve ``BLK_Rty_Get`` and ``BLK_Rec_Get``.
    :param ignore_start: answer every list request with its first page.
    :param write_delay_ms: write the answer to a write (a creation, an update, an answer to a
        request) this much later; reads and lists are answered at once.
    """

    name: str
    refuse_recreation: bool = False
    read_topics: bool = True
    ignore_start: bool = False
    write_delay_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.write_delay_ms < 0:
            raise ValueError(f"write_delay_ms must be >= 0, not {self.write_delay_ms!r}")

    def serves(self, topic: str) -> bool:
        """Whether this gateway reads the protocol topic *topic*."""
        return self.read_topics or topic not in READ_TOPICS


#: The original gateway's write delay, as a chain that commits a block a second would give it.
ORIGINAL_WRITE_DELAY_MS = 1000.0

PROFILES: dict[str, Profile] = {
    "sandbox": Profile("sandbox"),
    "original": Profile(
        "original", refuse_recreation=True, read_topics=False, write_delay_ms=ORIGINAL_WRITE_DELAY_MS
    ),
}


def profile(name: str, *, ignore_start: bool = False, write_delay_ms: float | None = None) -> Profile:
    """The profile *name*, with ``ignore_start`` and (when given) ``write_delay_ms`` set."""
    try:
        chosen = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: one of {', '.join(PROFILES)}") from None
    chosen = replace(chosen, ignore_start=ignore_start or chosen.ignore_start)
    if write_delay_ms is not None:
        chosen = replace(chosen, write_delay_ms=write_delay_ms)
    return chosen
