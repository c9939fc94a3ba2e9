"""How far bf16 training lands from fp32: P1 and P2 after the default profile's training, per seed.

    python benchmarks/bench_bf16_accuracy.py [--seeds 42 1 2] [--variants fp32 bf16 fp32-ulp] [--out DIR]

Each (seed, variant) is one training of the `default` profile (as `iivformer train --profile default
--precision P --seed S --device cpu` runs it) on the profile's data, then one P1 + P2 evaluation of
its best checkpoint on the test subjects. `fp32-ulp` is fp32 with every normalised 2D training input
moved by one float32 ulp (np.nextafter): how far this training moves from the smallest change of its
arithmetic, the yardstick for bf16's difference. About 2 minutes a training on 2 CPU cores.
"""
import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import numpy as np

from iivformer import config, train, workbench
from iivformer.evaluate import evaluate_checkpoint
from iivformer.prepare import prepare

VARIANTS = ("fp32", "bf16", "fp32-ulp")


def run(variant: str, seed: int, prepared, path_3d, path_2d, folder: Path) -> dict:
    """{"p1": mm, "p2": mm} of one training of the default profile in `variant` on `prepared`
    (the archives at `path_3d`, `path_2d`, prepared once for every run)."""
    if variant == "fp32-ulp":
        moved = np.nextafter(prepared.train.inputs, np.float32(np.inf))
        prepared = dataclasses.replace(prepared, train=dataclasses.replace(prepared.train, inputs=moved))
    run_config = config.training_config("default", seed=seed, device="cpu", precision=variant.split("-")[0])
    checkpoint = folder / f"{variant}-{seed}.pth"
    train.train(run_config, prepared, checkpoint, folder / f"{variant}-{seed}.log", progress=False)
    results = evaluate_checkpoint(checkpoint, path_3d, path_2d, device="cpu").results()
    return {protocol: results[protocol]["mean"] for protocol in ("p1", "p2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--out", help="folder for the checkpoints and logs (default: a temporary one)")
    args = parser.parse_args()
    path_3d, path_2d, kind, _ = workbench.find_dataset(workbench.current_profile("default"))
    print(f"default profile on the {kind} archives {path_3d.parent}; P1 / P2 in mm", flush=True)
    print("| seed | " + " | ".join(args.variants) + " |", flush=True)
    prepared = prepare(path_3d, path_2d)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        table = {}
        for seed in args.seeds:
            table[seed] = {variant: run(variant, seed, prepared, path_3d, path_2d, folder) for variant in args.variants}
            print(f"| {seed} | " + " | ".join(f"{r['p1']:.2f} / {r['p2']:.2f}" for r in table[seed].values()) + " |",
                  flush=True)
    for variant in (v for v in args.variants if v != "fp32" and "fp32" in args.variants):
        gaps = [table[seed][variant]["p1"] - table[seed]["fp32"]["p1"] for seed in args.seeds]
        print(f"{variant} - fp32, P1: mean {statistics.mean(gaps):+.2f} mm, median {statistics.median(gaps):+.2f} mm, "
              f"per seed {', '.join(f'{gap:+.2f}' for gap in gaps)}")


if __name__ == "__main__":
    main()
