"""``python -m lr_lightning fit --config ...`` (same as the ``lr-lightning`` console script)."""

import sys

from lr_lightning.cli import console_main

sys.exit(console_main())
