"""The kinds of request the page shows."""

from __future__ import annotations

from typing import Literal

Kind = Literal["partner", "order"]
KINDS: tuple[Kind, ...] = ("partner", "order")
