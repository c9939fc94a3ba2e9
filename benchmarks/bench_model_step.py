"""One training step of the model, the project's against the published implementation.

    python benchmarks/bench_model_step.py [--batch_sizes 256 1024] [--repeats 5] [--threads 2]
                                          [--embed_dim_ratio 32 --depth 4 --num_heads 8]

A step is what the training loop does per batch: forward in train mode, MPJPE loss, zero_grad,
backward and an Adam step, in float32 on the CPU (or `--device cuda`). The published model (benchmarks/published_model.py)
starts from the project model's weights; each model has its own Adam. The two alternate step by step
in this one process (A, B, A, B, ...) so that warm-up and the machine's load fall on both alike, and
the best of `--repeats` steps is kept for each. Before any step, the forward of the two (eval mode,
same weights, the batch's input) is compared: its largest absolute difference is printed.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.published_model import PublishedIIVFormer  # noqa: E402
from iivformer import runtime  # noqa: E402
from iivformer.config import ModelConfig, TrainConfig  # noqa: E402
from iivformer.metrics import mpjpe  # noqa: E402
from iivformer.model import IIVFormer  # noqa: E402


def training_step(model, optimizer, inputs, targets) -> float:
    """Seconds for one training step, as the training loop takes it (on CUDA, until the GPU is done)."""
    synchronize = torch.cuda.synchronize if inputs.device.type == "cuda" else (lambda: None)
    synchronize()
    began = time.perf_counter()
    loss = mpjpe(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    synchronize()
    return time.perf_counter() - began


@torch.no_grad()
def forward_difference(ours, published, inputs) -> float:
    ours.eval(), published.eval()
    try:
        return float((ours(inputs) - published(inputs)).abs().max())
    finally:
        ours.train(), published.train()


def compare(config: ModelConfig, batch: int, repeats: int, warmup: int, device) -> dict:
    torch.manual_seed(0)
    ours = IIVFormer(config).to(device).train()
    published = PublishedIIVFormer(config).to(device).train()
    published.load_state_dict(ours.state_dict(), strict=True)
    inputs = torch.randn(batch, config.num_view, config.num_joints, config.in_chans, device=device)
    targets = 100 * torch.randn(batch, 1, config.num_joints, 3, device=device)  # mm
    difference = forward_difference(ours, published, inputs)
    lr = TrainConfig().lr
    runs = {"ours": (ours, torch.optim.Adam(ours.parameters(), lr=lr)),
            "published": (published, torch.optim.Adam(published.parameters(), lr=lr))}
    times = {name: [] for name in runs}
    for step in range(warmup + repeats):
        for name, (model, optimizer) in runs.items():
            seconds = training_step(model, optimizer, inputs, targets)
            if step >= warmup:
                times[name].append(seconds)
    median = {name: sorted(seconds)[len(seconds) // 2] for name, seconds in times.items()}
    return {"ours": min(times["ours"]), "published": min(times["published"]), "difference": difference,
            "ours_median": median["ours"], "published_median": median["published"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each model, alternating (best kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each model first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    defaults = ModelConfig()
    parser.add_argument("--embed_dim_ratio", type=int, default=defaults.embed_dim_ratio)
    parser.add_argument("--depth", type=int, default=defaults.depth)
    parser.add_argument("--num_heads", type=int, default=defaults.num_heads)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ModelConfig(embed_dim_ratio=args.embed_dim_ratio, depth=args.depth, num_heads=args.num_heads)
    device = runtime.resolve_device(args.device)
    print(f"{runtime.describe_device(device)}; torch {torch.__version__}; float32; model embed_dim_ratio="
          f"{config.embed_dim_ratio} depth={config.depth} heads={config.num_heads}; best of {args.repeats} "
          f"alternating steps (forward + MPJPE + backward + Adam)")
    print(f"{'batch':>6} {'project s':>10} {'published s':>12} {'speed-up':>9} {'forward max diff':>17}"
          f"   (medians: project, published)")
    for batch in args.batch_sizes:
        result = compare(config, batch, args.repeats, args.warmup, device)
        print(f"{batch:>6} {result['ours']:>10.3f} {result['published']:>12.3f} "
              f"{result['published'] / result['ours']:>8.2f}x {result['difference']:>17.2e}"
              f"   ({result['ours_median']:.3f}, {result['published_median']:.3f})", flush=True)


if __name__ == "__main__":
    main()
