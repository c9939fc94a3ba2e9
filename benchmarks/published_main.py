"""The published main.py, restated as the baseline of the end-to-end benchmark.

    python benchmarks/published_main.py --data_3d A --data_2d B [--epochs 1] [--batch_size 1024]
                                        [--lr 0.0004] [--seed 42] [--device auto] [--model_path F]

What the published training script does, in its order and with its data structures: the archives
loaded with pickle, trimmed to 17 joints, `split_data` (per-frame camera rows included), the
normalisation statistics of the training inputs, a per-sample Dataset, a shuffling DataLoader with
4 workers, the published model (benchmarks/published_model.py: explicit attention, every score map
copied to the host), Adam, the MPJPE loss read back with `.item()` every batch; after every epoch
the test subjects evaluated through a 4-worker DataLoader and the best weights saved with
torch.save. Prints one line per epoch (`epoch N: train X mm, test Y mm, Z s`) and the total.
Only `prepare_published` is shared: benchmarks/bench_prepare.py times it alone.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.published_model import PublishedIIVFormer  # noqa: E402
from iivformer import cameras, skeleton  # noqa: E402
from iivformer.config import ModelConfig, TrainConfig  # noqa: E402

PUBLISHED = TrainConfig()


def _split_data(positions_3d, keypoints, subjects):
    xs, ys, cams = [], [], []
    for subject in subjects:
        camera_row = []
        for camera in cameras.cameras_for(subject):
            camera_row += list(camera.orientation) + list(camera.translation / 1000) + [camera.res_w, camera.res_h]
            camera_row += list(camera.focal_length) + list(camera.center) + list(camera.radial_distortion)
            camera_row += list(camera.tangential_distortion)
        for action, poses in positions_3d[subject].items():
            ys.append(poses)
            xs.append(np.concatenate(keypoints[subject][action], axis=2))
            cams.append(np.array([camera_row for _ in range(len(poses))]))
    x, y, cam = np.concatenate(xs), np.concatenate(ys), np.concatenate(cams)
    cam = np.expand_dims(cam, axis=1).repeat(17, axis=1)
    y = y * 1000
    y = y - y[:, :1, :]
    return x, y, cam


def prepare_published(path_3d, path_2d) -> dict:
    """The published preparation: {"x_train", "y_train", "x_test", "y_test", "cam_train"} as its arrays
    are made ((N, 4, 17, 2) normalised inputs, (N, 17, 3) root-relative mm targets)."""
    positions_3d = np.load(path_3d, allow_pickle=True)["positions_3d"].item()  # the project's own synthetic files
    keypoints = np.load(path_2d, allow_pickle=True)["positions_2d"].item()
    for subject in positions_3d:
        for action, poses in positions_3d[subject].items():
            positions_3d[subject][action] = poses[:, list(skeleton.KEPT_32_TO_17)]
            keypoints[subject][action] = [k[: len(poses)] for k in keypoints[subject][action]]
    x_train, y_train, cam_train = _split_data(positions_3d, keypoints, skeleton.TRAIN_SUBJECTS)
    x_test, y_test, _ = _split_data(positions_3d, keypoints, skeleton.TEST_SUBJECTS)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return {"x_train": x_train.reshape(-1, 17, 4, 2).transpose(0, 2, 1, 3), "y_train": y_train,
            "x_test": x_test.reshape(-1, 17, 4, 2).transpose(0, 2, 1, 3), "y_test": y_test, "cam_train": cam_train}


class PublishedDataset(Dataset):
    """One sample at a time, as float32 tensors: (4, 17, 2) input, (1, 17, 3) target."""

    def __init__(self, inputs, targets):
        self.inputs, self.targets = inputs, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return (torch.as_tensor(self.inputs[index], dtype=torch.float32),
                torch.as_tensor(self.targets[index], dtype=torch.float32).reshape(1, -1, 3))


def mpjpe(predicted, target):
    return torch.mean(torch.norm(predicted - target, dim=len(target.shape) - 1))


def train_epoch(model, optimizer, loader, device) -> float:
    model.train()
    total, count = 0.0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        loss = mpjpe(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(targets)
        count += len(targets)
    return total / count


@torch.no_grad()
def test_epoch(model, loader, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in loader:
        total += mpjpe(model(inputs.to(device)).cpu(), targets).item() * len(targets)
        count += len(targets)
    return total / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_3d", required=True)
    parser.add_argument("--data_2d", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=PUBLISHED.batch_size)
    parser.add_argument("--lr", type=float, default=PUBLISHED.lr)
    parser.add_argument("--seed", type=int, default=PUBLISHED.seed)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model_path", default="published_cpn.pth")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    data = prepare_published(args.data_3d, args.data_2d)
    train_loader = DataLoader(PublishedDataset(data["x_train"], data["y_train"]), batch_size=args.batch_size,
                              shuffle=True, num_workers=4)
    test_loader = DataLoader(PublishedDataset(data["x_test"], data["y_test"]), batch_size=args.batch_size,
                             shuffle=False, num_workers=4)
    model = PublishedIIVFormer(ModelConfig()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    best = float("inf")
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        train_error = train_epoch(model, optimizer, train_loader, device)
        test_error = test_epoch(model, test_loader, device)
        if test_error < best:
            best = test_error
            torch.save(model.state_dict(), args.model_path)
        print(f"epoch {epoch}: train {train_error:.2f} mm, test {test_error:.2f} mm, "
              f"{time.perf_counter() - started:.2f} s", flush=True)
    print(f"total {time.perf_counter() - began:.2f} s (in-process)")


if __name__ == "__main__":
    main()
