"""``python -m lr_lightning fit --config ...``."""

from lr_lightning.cli import main

main()
