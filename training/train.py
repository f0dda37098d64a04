"""``dexwm-train --config config/train_X.yaml``: run (or resume) a training run.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N [--nnodes M ...] -m training.train
--config ...`` (the output directory must be on a file system all nodes share). Re-running the
same command after an interruption resumes from the latest checkpoint.
"""
from __future__ import annotations

import argparse

from training.config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexwm-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML training config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. optim.max_steps=100")
    parser.add_argument("--cache-only", action="store_true",
                        help="build the latent cache and stop")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    from training.trainer import Trainer

    trainer = Trainer(config)
    try:
        if not args.cache_only:
            metrics = trainer.fit()
            if trainer.rank == 0:
                print(f"finished {trainer.step} steps in {config.output_dir}: {metrics}")
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
