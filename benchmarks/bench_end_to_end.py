"""End to end: `iivformer train` against the published main.py, each a whole process, same data.

    python benchmarks/bench_end_to_end.py [--preset small] [--epochs 1] [--repeats 1] [--device auto]
                                          [--ours "" "--precision bf16" "--compile" ...]

Each run is one fresh process from start to exit (interpreter and torch start-up, loading and
preparing the archives, training `--epochs` epochs of the published recipe: full-size model,
batch 1024, lr 0.0004, every epoch's test evaluation and checkpoint). The published side is
benchmarks/published_main.py (the published main.py restated: pickle loading, split_data, a
per-sample Dataset with a 4-worker DataLoader, the published model copying every attention map to
the host, `loss.item()` every batch). The two alternate (published, ours, published, ...); the
best wall time of each is kept. With --repeats > 1 each round's ratio (the published run against
each side's run right after it) is printed too, with their median: on a machine whose speed drifts
between minutes, runs side by side in time are the fairer pair. Also printed: the steady epoch (the
fastest after the first, when --epochs > 1), each side's own epoch timing (train pass + test
evaluation), and the test MPJPE after the last epoch, so that speed is not bought with accuracy.
`--ours` lists variants of the project's command to time as well (extra flags of `iivformer
train`, "" for the plain recipe).
"""
import argparse
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EPOCH_OURS = re.compile(r"epoch (\d+)/\d+: train MPJPE [\d.]+ mm, test MPJPE ([\d.]+) mm, ([\d.]+) s")
EPOCH_PUBLISHED = re.compile(r"epoch (\d+): train [\d.]+ mm, test ([\d.]+) mm, ([\d.]+) s")


def run(command: list, pattern) -> dict:
    """Wall seconds of the whole process, its epochs' seconds and its last test MPJPE."""
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {shlex.join(command)}\n{done.stderr[-2000:]}")
    epochs = [(float(m.group(2)), float(m.group(3))) for m in pattern.finditer(done.stdout + done.stderr)]
    return {"wall": wall, "epoch_seconds": [s for _, s in epochs], "test_mpjpe": epochs[-1][0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "small", "full"], default="small")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side, alternating; the best is kept")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ours", nargs="*", default=[""], help='variants: extra `iivformer train` flags ("" plain)')
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from iivformer import runtime, workbench

    path_3d, path_2d, _ = workbench.synthetic_dataset(workbench.data_dir() / "synthetic" / args.preset, args.preset,
                                                      progress=True)
    device = runtime.resolve_device(args.device)
    print(f"device: {runtime.describe_device(device)}; synthetic '{args.preset}', {args.epochs} epoch(s) of the "
          f"published recipe (full-size model, batch 1024); best of {args.repeats} whole processes", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        data = ["--data_3d", str(path_3d), "--data_2d", str(path_2d), "--epochs", str(args.epochs),
                "--device", args.device]
        sides = {"published main.py": ([sys.executable, str(HERE / "published_main.py"), *data,
                                        "--model_path", f"{folder}/published.pth"], EPOCH_PUBLISHED)}
        for number, flags in enumerate(args.ours):
            name = f"iivformer train {flags}".strip()
            sides[name] = ([sys.executable, "-m", "iivformer", "train", *data, *shlex.split(flags),
                            "--model_path", f"{folder}/ours{number}.pth", "--log_file", f"{folder}/ours{number}.log"],
                           EPOCH_OURS)
        rounds = []  # every round's wall seconds by side
        for _ in range(args.repeats):
            rounds.append({})
            for name, (command, pattern) in sides.items():
                result = run(command, pattern)
                rounds[-1][name] = result["wall"]
                if name not in results or result["wall"] < results[name]["wall"]:
                    results[name] = result
                print(f"  {name}: {result['wall']:.1f} s", flush=True)
    if len(rounds) > 1:
        print_round_ratios(rounds)
    base = results["published main.py"]
    print(f"{'':34}{'whole process':>14}{'speed-up':>9}{'steady epoch':>14}{'speed-up':>9}{'test MPJPE':>12}")
    for name, result in results.items():
        steady = min(result["epoch_seconds"][1:] or result["epoch_seconds"])
        base_steady = min(base["epoch_seconds"][1:] or base["epoch_seconds"])
        print(f"{name:34}{result['wall']:>12.1f} s{base['wall'] / result['wall']:>8.2f}x{steady:>12.2f} s"
              f"{base_steady / steady:>8.2f}x{result['test_mpjpe']:>9.2f} mm")


def print_round_ratios(rounds: list) -> None:
    """Each side's speed-up over the published run of the same round, and the median over rounds."""
    print("speed-up over the published run of the same round:")
    for name in [name for name in rounds[0] if name != "published main.py"]:
        ratios = [walls["published main.py"] / walls[name] for walls in rounds]
        print(f"  {name:34}" + " ".join(f"{ratio:.2f}x" for ratio in ratios)
              + f"   median {statistics.median(ratios):.2f}x", flush=True)


if __name__ == "__main__":
    main()
