"""Training throughput by precision and compilation: fp32, bf16, fp32+compile, bf16+compile.

    python benchmarks/bench_precision.py [--samples 8192] [--batch_size 1024] [--device auto] [--epochs 3]
                                         [--embed_dim_ratio 32 --depth 4 --num_heads 8] [--threads N]
                                         [--settings fp32,bf16,fp32+compile,bf16+compile]

The project's loop (iivformer.train, as `iivformer train --precision P [--compile]` runs it) on the
first `--samples` training frames of the 'small' synthetic set, as benchmarks/bench_train.py takes
them; the published (full-size) model by default. Each setting is a fresh run of `--epochs` epochs
from the same seed; its figure is the samples per second of the training pass of its fastest
epoch after the first, since the first includes torch.compile's compilation (shown as its own
column: first-epoch seconds minus a steady epoch's). Keep `--samples` a multiple of the batch, or
a compiled run also compiles a second graph for the last, smaller batch.
"""
import argparse
import os
import tempfile
from pathlib import Path

import torch

from iivformer import runtime, train, workbench
from iivformer.config import ModelConfig, TrainConfig
from iivformer.prepare import prepare

PUBLISHED = {**TrainConfig().to_dict(), **ModelConfig().to_dict()}
SETTINGS = ("fp32", "bf16", "fp32+compile", "bf16+compile")


def measure(setting: str, prepared, args, device) -> dict:
    precision, _, compiled = setting.partition("+")
    config = TrainConfig(batch_size=args.batch_size, epochs=args.epochs, lr=PUBLISHED["lr"], device=str(device),
                         model=ModelConfig(embed_dim_ratio=args.embed_dim_ratio, depth=args.depth,
                                           num_heads=args.num_heads),
                         precision=precision, compile=bool(compiled))
    with tempfile.TemporaryDirectory() as folder:
        history = train.train(config, prepared, Path(folder) / "bench.pth", Path(folder) / "bench.log",
                              progress=False)
        warned = "cannot run here" in (Path(folder) / "bench.log").read_text()
    steady = max(history[1:], key=lambda record: record["samples_per_second"])
    train_seconds = [len(prepared.train) / record["samples_per_second"] for record in history]
    return {"setting": setting + (" (fell back to eager)" if warned else ""),
            "samples_per_second": steady["samples_per_second"],
            "first_epoch_extra_s": train_seconds[0] - len(prepared.train) / steady["samples_per_second"],
            "train_mpjpe": history[-1]["train_mpjpe"], "test_mpjpe": history[-1]["test_mpjpe"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8192, help="training frames (0: all)")
    parser.add_argument("--batch_size", type=int, default=PUBLISHED["batch_size"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per setting (at least 2)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--embed_dim_ratio", type=int, default=PUBLISHED["embed_dim_ratio"])
    parser.add_argument("--depth", type=int, default=PUBLISHED["depth"])
    parser.add_argument("--num_heads", type=int, default=PUBLISHED["num_heads"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    args = parser.parse_args()
    settings = args.settings.split(",")
    if any(setting not in SETTINGS for setting in settings) or args.epochs < 2:
        parser.error(f"--settings takes {', '.join(SETTINGS)}; --epochs at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.resolve_device(args.device)
    path_3d, path_2d, _ = workbench.synthetic_dataset(workbench.data_dir() / "synthetic" / "small", "small",
                                                      progress=True)
    prepared = prepare(path_3d, path_2d)
    if args.samples:
        prepared.train = prepared.train.subset(slice(0, args.samples))
    prepared.test = prepared.test.subset(slice(0, 1024))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {len(prepared.train):,} samples, batch {args.batch_size} "
          f"({-(-len(prepared.train) // args.batch_size)} batches an epoch), {args.epochs} epochs a setting; model "
          f"embed_dim_ratio={args.embed_dim_ratio} depth={args.depth} heads={args.num_heads}; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'setting':<34}{'samples/s':>12}{'vs fp32':>9}{'1st epoch extra':>17}{'train MPJPE':>13}{'test MPJPE':>12}")
    base = None
    for setting in settings:
        result = measure(setting, prepared, args, device)
        base = base or (result["samples_per_second"] if setting == "fp32" else None)
        ratio = f"{result['samples_per_second'] / base:.2f}x" if base else "-"
        print(f"{result['setting']:<34}{result['samples_per_second']:>12,.0f}{ratio:>9}"
              f"{result['first_epoch_extra_s']:>15.1f} s{result['train_mpjpe']:>10.2f} mm{result['test_mpjpe']:>9.2f} mm",
              flush=True)


if __name__ == "__main__":
    main()
