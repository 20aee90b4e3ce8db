"""``python -m listener`` is the ``listener`` command."""

import sys

from listener.cli.main import main

sys.exit(main())
