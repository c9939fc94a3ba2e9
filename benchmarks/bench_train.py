"""Training throughput: the project's loop and model against the published loop and model, same data.

    python benchmarks/bench_train.py [--samples 8192] [--batch_size 1024] [--device auto]
                                     [--embed_dim_ratio 32 --depth 4 --num_heads 8] [--threads N] [--repeats 2]

The published loop (main.py, restated in benchmarks/published_main.py) with the published model
(benchmarks/published_model.py, every attention map copied to the host): a per-sample Dataset, a
shuffling DataLoader with 4 workers that collates each batch on the host, a host-to-device copy per
batch and a `loss.item()` per batch.
The project's loop (iivformer.train): tensors moved to the device once, batches drawn by index
from a seeded permutation, the loss read back every 20 batches. One epoch each over the first
`--samples` training frames of the 'small' synthetic set (0: all of them), both from the same
weights; samples per second of the training pass.
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from published_main import PublishedDataset, train_epoch  # this folder: the published main.py, restated
from benchmarks.published_model import PublishedIIVFormer
from iivformer import runtime, train, workbench
from iivformer.config import ModelConfig, TrainConfig
from iivformer.model import IIVFormer
from iivformer.prepare import prepare

PUBLISHED = {**TrainConfig().to_dict(), **ModelConfig().to_dict()}


def published_epoch(state: dict, model_config, split, batch_size, device) -> float:
    """Samples/s of one epoch of the published loop with the published model, from weights `state`."""
    model = PublishedIIVFormer(model_config).to(device)
    model.load_state_dict(state)
    optimizer = torch.optim.Adam(model.parameters(), lr=PUBLISHED["lr"])
    loader = DataLoader(PublishedDataset(split.inputs, split.targets),
                        batch_size=batch_size, shuffle=True, num_workers=4)
    began = time.perf_counter()
    train_epoch(model, optimizer, loader, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(split) / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8192, help="training frames (0: all)")
    parser.add_argument("--batch_size", type=int, default=PUBLISHED["batch_size"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--embed_dim_ratio", type=int, default=PUBLISHED["embed_dim_ratio"])
    parser.add_argument("--depth", type=int, default=PUBLISHED["depth"])
    parser.add_argument("--num_heads", type=int, default=PUBLISHED["num_heads"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="epochs of each loop, alternating")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = runtime.resolve_device(args.device)
    path_3d, path_2d, _ = workbench.synthetic_dataset(workbench.data_dir() / "synthetic" / "small", "small",
                                                      progress=True)
    prepared = prepare(path_3d, path_2d)
    if args.samples:
        prepared.train = prepared.train.subset(slice(0, args.samples))
    prepared.test = prepared.test.subset(slice(0, 1024))
    model_config = ModelConfig(embed_dim_ratio=args.embed_dim_ratio, depth=args.depth, num_heads=args.num_heads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {len(prepared.train):,} samples, batch {args.batch_size}, "
          f"model embed_dim_ratio={args.embed_dim_ratio} depth={args.depth} heads={args.num_heads}")


    published, ours = [], []
    for _ in range(args.repeats):  # alternate, so warm-up and machine load fall on both alike
        torch.manual_seed(0)
        state = IIVFormer(model_config).state_dict()  # both loops start from these weights
        published.append(published_epoch(state, model_config, prepared.train, args.batch_size, device))
        with tempfile.TemporaryDirectory() as folder:
            config = TrainConfig(batch_size=args.batch_size, epochs=1, model=model_config, device=str(device))
            history = train.train(config, prepared, Path(folder) / "bench.pth", Path(folder) / "bench.log",
                                  progress=False)
        ours.append(history[0]["samples_per_second"])
    print(f"published loop: {max(published):10,.0f} samples/s (best of {args.repeats})")
    print(f"project loop:   {max(ours):10,.0f} samples/s (best of {args.repeats}; "
          f"{max(ours) / max(published):.2f}x the published loop)")

if __name__ == "__main__":
    main()
