"""Fault knobs: the ways a real gateway misbehaves, made reproducible for tests.

Each knob draws from its own random stream, seeded from ``Faults.seed`` and the knob's name, and
draws exactly once per request whatever the other knobs do: with the same seed, the same
requests (in order) meet the same faults, and turning one knob on does not change another's
decisions.

- ``delay_ms``: every answer is written that many milliseconds after the request was applied
  (the gateway keeps serving meanwhile; delayed answers wait in the outbox).
- ``drop_rate``: the request is applied but never answered.
- ``error_rate``: the request is answered ``error`` and not applied.
- ``garbage_rate``: an undecodable value is written to ``BLK_Res`` before the answer.
- ``duplicate_rate``: the answer is written twice.
- ``foreign_rate``: a well-formed answer addressed to another (random) token, and with echo to
  another request id, is written before the real one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields
from typing import Any

KNOBS = ("drop", "error", "garbage", "duplicate", "foreign")

ERROR_TEXT = "injected fault: the gateway refused this request (error-rate knob)"


@dataclass(frozen=True)
class Faults:
    """Fault rates (0..1), a delay, and the seed of their random streams."""

    delay_ms: float = 0.0
    drop_rate: float = 0.0
    error_rate: float = 0.0
    garbage_rate: float = 0.0
    duplicate_rate: float = 0.0
    foreign_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be between 0 and 1, not {value}")
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, not {self.delay_ms}")

    @property
    def active(self) -> bool:
        return bool(self.delay_ms) or any(getattr(self, f"{knob}_rate") for knob in KNOBS)


@dataclass(frozen=True)
class Decision:
    """The faults that one request meets."""

    drop: bool = False
    error: bool = False
    garbage: bool = False
    duplicate: bool = False
    foreign: bool = False
    delay_ms: float = 0.0

    @property
    def names(self) -> list[str]:
        names = [knob for knob in KNOBS if getattr(self, knob)]
        if self.delay_ms:
            names.append("delay")
        return names


NO_FAULTS = Decision()


class FaultInjector:
    """Draws the :class:`Decision` for each request, and the noise to write."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._streams = {knob: random.Random(f"{faults.seed}:{knob}") for knob in KNOBS}
        self._noise = random.Random(f"{faults.seed}:noise")

    def decide(self) -> Decision:
        if not self.faults.active:
            return NO_FAULTS
        rolled = {knob: self._streams[knob].random() < getattr(self.faults, f"{knob}_rate") for knob in KNOBS}
        return Decision(**rolled, delay_ms=self.faults.delay_ms)

    def foreign_token(self) -> str:
        return "".join(
            self._noise.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            for _ in range(43)
        )

    def foreign_request_id(self) -> str:
        return f"{self._noise.getrandbits(128):032x}"

    def garbage(self, header: dict[str, Any]) -> bytes | None:
        """One undecodable ``BLK_Res`` value. Some kinds carry the real answer's header, so a
        client that matches before validating is caught."""
        kind = self._noise.randrange(len(GARBAGE_KINDS))
        return GARBAGE_KINDS[kind](header)


def _literal(value: Any) -> bytes:
    return json.dumps(repr(value)).encode("utf-8")


#: Values that no decoder of PROTOCOL.md section 1 may accept.
GARBAGE_KINDS = (
    lambda h: b"\xff\xfe\x00not utf-8 \xc3\x28",
    lambda h: b"{this is not json",
    lambda h: json.dumps({"auth": h["auth"], "data": []}).encode(),
    lambda h: json.dumps([h, {"data": []}, {"extra": True}]).encode(),
    lambda h: json.dumps("just a string").encode(),
    lambda h: json.dumps([{"request_id": h.get("request_id")}, {"message": "no auth"}]).encode(),
    lambda h: json.dumps([h, {"nothing": 1}]).encode(),
    lambda h: json.dumps([h, {"data": [], "error": "two outcomes"}]).encode(),
    lambda h: json.dumps([1, 2]).encode(),
    lambda h: _literal([h, {"data": {1, 2}}]),
    lambda h: b"",
)
