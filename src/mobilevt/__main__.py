"""``python -m mobilevt`` (and ``torchrun -m mobilevt``) run the command line."""

import sys

from mobilevt.cli.main import main

sys.exit(main())
