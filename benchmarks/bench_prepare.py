"""Time and peak memory of data preparation, ours against the published pipeline's approach.

    python benchmarks/bench_prepare.py [--preset full] [--skip_published]

Each measurement runs in a fresh process so its peak resident memory is its own. The published
pipeline (split_data) also builds a float64 camera array of N x 17 x 72 per split; it is
measured on the 'small' preset only, and its size at full scale is computed from its shape.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

OURS = """
import json, resource, sys, time
from iivformer.prepare import prepare
start = time.perf_counter()
prepared = prepare(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train": len(prepared.train), "test": len(prepared.test)}))
"""

# The published main.py's preparation (benchmarks/published_main.py): pickle load, trim, split_data
# (with its camera array), normalisation; arrays as the published code makes them.
PUBLISHED = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from published_main import prepare_published
start = time.perf_counter()
data = prepare_published(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train": len(data["x_train"]), "test": len(data["x_test"]),
                  "camera_array_mb": data["cam_train"].nbytes / 2**20}))
"""


def dataset(preset: str) -> tuple:
    from iivformer import workbench

    folder = workbench.data_dir() / "synthetic" / preset
    path_3d, path_2d, _ = workbench.synthetic_dataset(folder, preset, progress=True)
    return str(path_3d), str(path_2d)


def measure(code: str, paths: tuple) -> dict:
    completed = subprocess.run([sys.executable, "-c", code, *paths, str(Path(__file__).resolve().parent)],
                               capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", choices=["tiny", "small", "full"])
    parser.add_argument("--skip_published", action="store_true")
    args = parser.parse_args()
    paths = dataset(args.preset)
    ours = measure(OURS, paths)
    print(f"ours      ({args.preset}): {ours['train']:,} train + {ours['test']:,} test frames, "
          f"{ours['seconds']:.1f} s, peak {ours['peak_mb']:,.0f} MB")
    if not args.skip_published:
        small = dataset("small")
        published = measure(PUBLISHED, small)
        ours_small = measure(OURS, small)
        full_train = ours["train"]
        print(f"ours      (small): {ours_small['seconds']:.1f} s, peak {ours_small['peak_mb']:,.0f} MB")
        print(f"published (small): {published['seconds']:.1f} s, peak {published['peak_mb']:,.0f} MB "
              f"(camera array {published['camera_array_mb']:,.0f} MB for {published['train']:,} frames; "
              f"{full_train * 17 * 72 * 8 / 2**30:.1f} GB at the {full_train:,} training samples of '{args.preset}')")


if __name__ == "__main__":
    main()
