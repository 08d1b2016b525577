"""Train a config, test its best checkpoint, and say where everything went.

    python scripts/quickstart.py --config configs/quickstart.yaml [extra CLI overrides]
"""

from __future__ import annotations

import argparse
import sys
import time

from lr_lightning.cli import main


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    args, extra = parser.parse_known_args(argv)
    t0 = time.perf_counter()
    cli = main(["fit", "--config", args.config, *extra])
    fit_s = time.perf_counter() - t0
    trainer = cli.trainer
    ckpt = trainer.checkpoint_callback.best_model_path or "last"
    results = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt)[0]
    acc = results.get("test/acc")
    print("\n" + "=" * 72)
    print(f"config:       {args.config}")
    print(f"train time:   {fit_s:.0f} s")
    if acc is not None:
        print(f"test accuracy: {100 * acc:.2f} %  (checkpoint: {ckpt})")
    print(f"logs:         {trainer.log_dir}  (metrics.csv, config.yaml)")
    print(f"checkpoints:  {trainer.checkpoint_callback.dirpath}")
    print("=" * 72)
    return results


if __name__ == "__main__":
    run(sys.argv[1:])
