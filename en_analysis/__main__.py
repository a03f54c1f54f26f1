"""``python -m en_analysis`` (and ``torchrun -m en_analysis``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
