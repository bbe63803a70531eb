"""``make run``: bring the whole integration up on this machine, in the foreground.

The steps, settings and files are described in :mod:`scripts.stack.orchestration`; ``--help``
lists the options. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.stack.orchestration import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
