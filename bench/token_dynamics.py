"""Token-dynamics study: Mamba with the sign of S_Cᵀ S_B constrained (Vo et al., ICLR 2025,
refinement 1 and its controls) against the plain block, on the synthetic tasks, through the
same pipeline as ``python train.py experiment=synthetic/<task>``.

    python -m bench.token_dynamics --tasks selective_copy induction_heads --seeds 0 1 2
    python -m bench.token_dynamics --variants plain positive negative --epochs 2 --out study.md
    python -m bench.token_dynamics --out study.md --resume     # run only what study.json lacks

Variants: ``plain`` (x_proj unconstrained), ``positive`` (``model.layer.io_spectrum=positive``,
the refinement: no convergent scenario), ``negative`` (the convergent control) and ``mixed``
(indefinite). For every run it reports the test metrics and, for each trained layer, the
scenario that the criterion in ``ssm.token_dynamics`` predicts. Writes a markdown table (and
a JSON file beside it with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

from ssm.token_dynamics import scenario_table
from bench.training_config import compose_training_config
from ssm.training.run import fit

VARIANTS = {"plain": "null", "positive": "positive", "negative": "negative", "mixed": "mixed"}


def train_one(task: str, variant: str, seed: int, args: argparse.Namespace) -> dict:
    overrides = [
        f"experiment=synthetic/{task}", f"seed={seed}", f"model.layer.io_spectrum={VARIANTS[variant]}",
        f"trainer.max_epochs={args.epochs}", f"model.n_layers={args.layers}",
        "logger=none", "+trainer.enable_progress_bar=false", "callbacks.progress=null",
    ] + list(args.override)
    cfg = compose_training_config(overrides, "token-dynamics-")
    start = time.perf_counter()
    metrics, lightning_task, _ = fit(cfg)
    reports = scenario_table(lightning_task.model)
    return {
        "task": task, "variant": variant, "seed": seed,
        "test_acc": metrics.get("test/acc"), "test_seq_acc": metrics.get("test/seq_acc"),
        "test_loss": metrics.get("test/loss"),
        "scenarios": [r.scenario for r in reports],
        "eigen_signs": [(r.n_positive, r.n_negative) for r in reports],
        "minutes": (time.perf_counter() - start) / 60,
    }


def percent(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def table(rows: list[dict]) -> str:
    lines = ["| task | variant | seed | test acc | test seq_acc | test loss | predicted scenario per layer "
             "(eigenvalues of S_Cᵀ S_B: +/−) | minutes |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        layers = ", ".join(f"{s} ({p}/{n})" for s, (p, n) in zip(r["scenarios"], r["eigen_signs"]))
        lines.append(f"| {r['task']} | {r['variant']} | {r['seed']} | {percent(r['test_acc'])} | "
                     f"{percent(r['test_seq_acc'])} | {r['test_loss']:.3f} | {layers} | {r['minutes']:.1f} |")
    lines += ["", "| task | variant | seeds | mean test acc | min | max |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["variant"]), []).append(r["test_acc"])
    for (task, variant), accs in groups.items():
        lines.append(f"| {task} | {variant} | {len(accs)} | {percent(statistics.fmean(accs))} | "
                     f"{percent(min(accs))} | {percent(max(accs))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.token_dynamics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["selective_copy", "induction_heads"],
                        choices=["selective_copy", "induction_heads"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--override", nargs="*", default=[], help="more Hydra overrides for every run")
    parser.add_argument("--out", type=pathlib.Path, help="write the table here (and the rows as .json beside it)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out's .json and run only the missing ones")
    args = parser.parse_args(argv)
    rows = []
    if args.resume and args.out and args.out.with_suffix(".json").is_file():
        rows = json.loads(args.out.with_suffix(".json").read_text())
    done = {(r["task"], r["variant"], r["seed"]) for r in rows}
    for task in args.tasks:
        for seed in args.seeds:
            for variant in args.variants:
                if (task, variant, seed) in done:
                    continue
                rows.append(train_one(task, variant, seed, args))
                print(table(rows[-1:]).splitlines()[2], flush=True)
                if args.out:  # after every run, so a long study can be read while it goes
                    args.out.write_text(table(rows) + "\n")
                    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
