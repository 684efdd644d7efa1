"""Learning check: a small model (S4D by default) on a small generated Pathfinder-32 set,
through the same training pipeline as ``python train.py experiment=lra/pathfinder``.

    python -m bench.pathfinder_learning --n-images 4000 --epochs 20 --difficulty hard
    python -m bench.pathfinder_learning --model ss2d --pooling mean --layers 2 --d-model 32 --d-state 8

Prints train/val/test accuracy next to chance (50%) and the wall-clock time.
"""

from __future__ import annotations

import argparse
import time

from bench.training_config import compose_training_config
from ssm.training.run import run



def learning_check(args: argparse.Namespace) -> dict[str, float]:
    overrides = [
        "experiment=lra/pathfinder", f"model={args.model}", f"model.pooling={args.pooling}",
        f"data_root={args.data_root}", f"data.n_images={args.n_images}",
        f"data.difficulty={args.difficulty}", f"data.batch_size={args.batch_size}",
        f"model.n_layers={args.layers}", f"model.d_model={args.d_model}", f"model.layer.d_state={args.d_state}",
        f"trainer.max_epochs={args.epochs}", f"optimizer.lr={args.lr}", "scheduler.warmup_steps=100",
        "logger=csv", "+trainer.enable_progress_bar=false", "callbacks.progress=null",
    ]
    cfg = compose_training_config(overrides, "pathfinder-learning-")
    return run(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pathfinder_learning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--n-images", type=int, default=4000)
    parser.add_argument("--difficulty", default="hard", choices=["easy", "intermediate", "hard"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--d-state", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.004)
    parser.add_argument("--model", default="s4d", help="a configs/model name: s4d, mamba, ss2d, nss_mamba, mamba2d, ...")
    parser.add_argument("--pooling", default="last", choices=["last", "mean"], help="the experiment's is last")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    metrics = learning_check(args)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nPathfinder-32 {args.difficulty}, {args.n_images} images, {args.layers}x{args.d_model} {args.model}, "
          f"{args.epochs} epochs, {minutes:.1f} min")
    print("| split | accuracy | chance |\n|---|---|---|")
    for split in ("train", "val", "test"):
        key = f"{split}/acc"
        if key in metrics:
            print(f"| {split} | {100 * metrics[key]:.1f}% | 50% |")


if __name__ == "__main__":
    main()
