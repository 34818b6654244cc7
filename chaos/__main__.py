"""``python -m chaos`` is ``synapse-chaos``."""

import sys

from chaos.cli import main

sys.exit(main())
