"""Evaluation: the project's one pass against the published evaluate.py run once per protocol.

    python benchmarks/bench_evaluate.py [--preset tiny|small|full] [--batch_size 1024] [--device auto] [--repeats 2]

The published evaluation (evaluate.py, restated): a per-sample Dataset and a 4-worker DataLoader
over the test split, every batch's prediction copied to the host, the protocol's error computed per
batch (P1 with torch, P2 with float64 NumPy Procrustes), the whole run repeated for the second
protocol. The project (iivformer.evaluate.evaluate_split): one prediction pass in large batches,
the predictions kept on the device, per-joint P1 and P2 of every frame computed there, one copy to
the host. The same full-size model (random weights; the published side computes it the published
way, benchmarks/published_model.py, every attention map copied to the host) and the same test frames (the synthetic
preset's S9 and S11). Prints the seconds and samples/s of each, and their ratio.
"""
import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from published_main import PublishedDataset  # this folder: the published main.py, restated
from benchmarks.published_model import PublishedIIVFormer
from iivformer import evaluate, metrics, runtime, workbench
from iivformer.model import IIVFormer
from iivformer.prepare import prepare


@torch.no_grad()
def published_protocol(model, split, protocol: str, batch_size: int, device) -> float:
    """One run of the published evaluation for one protocol: its mean error (mm) over the frames."""
    model.eval()
    loader = DataLoader(PublishedDataset(split.inputs, split.targets), batch_size=batch_size, shuffle=False,
                        num_workers=4)
    total, count = 0.0, 0
    for inputs, targets in loader:
        predicted = model(inputs.to(device)).cpu()
        if protocol == "p1":
            total += float(metrics.mpjpe(predicted, targets)) * len(targets)
        else:
            total += metrics.p_mpjpe(predicted.numpy()[:, 0], targets.numpy()[:, 0]) * len(targets)
        count += len(targets)
    return total / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "small", "full"], default="small")
    parser.add_argument("--batch_size", type=int, default=1024, help="the published evaluation's batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating; the best is kept")
    args = parser.parse_args()
    device = runtime.resolve_device(args.device)
    path_3d, path_2d, _ = workbench.synthetic_dataset(workbench.data_dir() / "synthetic" / args.preset, args.preset,
                                                      progress=True)
    test = prepare(path_3d, path_2d).test
    torch.manual_seed(0)
    model = IIVFormer().to(device).eval()
    published_model = PublishedIIVFormer().to(device).eval()  # the same weights, computed the published way
    published_model.load_state_dict(model.state_dict())
    print(f"device: {runtime.describe_device(device)}; torch {torch.__version__}; {len(test):,} test frames "
          f"(synthetic '{args.preset}', S9+S11), full-size model")
    published, ours, checks = [], [], {}
    for _ in range(args.repeats):  # alternate, so warm-up and machine load fall on both alike
        began = time.perf_counter()
        checks["published"] = [published_protocol(published_model, test, protocol, args.batch_size, device)
                                for protocol in ("p1", "p2")]
        published.append(time.perf_counter() - began)
        began = time.perf_counter()
        result = evaluate.evaluate_split(model, test, device)
        ours.append(time.perf_counter() - began)
        checks["ours"] = [float(np.mean(result.errors[protocol], dtype=np.float64)) for protocol in ("p1", "p2")]
    for name, seconds in (("published evaluate.py, once per protocol", min(published)),
                          ("project, one pass", min(ours))):
        print(f"{name:42} {seconds:7.2f} s  {len(test) / seconds:10,.0f} samples/s")
    print(f"ratio: {min(published) / min(ours):.2f}x the published evaluation (best of {args.repeats})")
    difference = max(abs(a - b) for a, b in zip(checks["published"], checks["ours"]))
    print(f"same errors: P1 {checks['ours'][0]:.3f} mm, P2 {checks['ours'][1]:.3f} mm "
          f"(largest difference from the published way {difference:.1e} mm)")


if __name__ == "__main__":
    main()
