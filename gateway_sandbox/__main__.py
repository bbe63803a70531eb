"""``python -m gateway_sandbox``: see :mod:`gateway_sandbox.cli`."""

import sys

from gateway_sandbox.cli import main

sys.exit(main())
