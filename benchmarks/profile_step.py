"""Where a training step of the model spends its time on a device, and how the attention variants compare.

    python benchmarks/profile_step.py [--device cuda] [--batch_size 1024] [--steps 20]

Times the full-size model's training step (forward + MPJPE + backward + Adam, as
benchmarks/bench_model_step.py takes it) with the narrow intra-view heads computed three ways:
scaled_dot_product_attention (the default off the CPU), head by head as explicit attention (the
default on the CPU), and the published model (benchmarks/published_model.py) with and without its
host copies of the attention maps. Then prints torch.profiler's table of the default step's
operators, by device time.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import published_model  # noqa: E402
from benchmarks.bench_model_step import training_step  # noqa: E402
from iivformer import runtime  # noqa: E402
from iivformer.config import TrainConfig  # noqa: E402
from iivformer.model import Attention, IIVFormer  # noqa: E402


def best_step(model, inputs, targets, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=TrainConfig().lr)
    times = [training_step(model, optimizer, inputs, targets) for _ in range(steps + 3)]
    return min(times[3:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = runtime.resolve_device(args.device)
    torch.manual_seed(0)
    inputs = torch.randn(args.batch_size, 4, 17, 2, device=device)
    targets = 100 * torch.randn(args.batch_size, 1, 17, 3, device=device)
    ours = IIVFormer().to(device).train()
    published = published_model.PublishedIIVFormer().to(device).train()
    published.load_state_dict(ours.state_dict())
    print(f"{runtime.describe_device(device)}; torch {torch.__version__}; batch {args.batch_size}; best of {args.steps} steps")
    default = Attention.NARROW_DEVICES
    for name, devices in (("narrow heads by SDPA", ()), ("narrow heads one by one", (device.type,))):
        Attention.NARROW_DEVICES = devices
        print(f"  project model, {name:28} {best_step(ours, inputs, targets, args.steps) * 1000:8.1f} ms", flush=True)
    Attention.NARROW_DEVICES = default
    print(f"  published model, {'maps copied to the host':26} {best_step(published, inputs, targets, args.steps) * 1000:8.1f} ms")
    real_cpu = torch.Tensor.cpu
    torch.Tensor.cpu = lambda self, *a, **k: self  # the published model without its host copies
    try:
        print(f"  published model, {'no host copies':26} {best_step(published, inputs, targets, args.steps) * 1000:8.1f} ms")
    finally:
        torch.Tensor.cpu = real_cpu
    optimizer = torch.optim.Adam(ours.parameters(), lr=TrainConfig().lr)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as profile:
        for _ in range(5):
            training_step(ours, optimizer, inputs, targets)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(profile.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
