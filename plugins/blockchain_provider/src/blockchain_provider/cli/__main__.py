"""``python -m blockchain_provider.cli``: the ``blockchain-provider`` command."""

import sys

from blockchain_provider.cli import main

sys.exit(main())
