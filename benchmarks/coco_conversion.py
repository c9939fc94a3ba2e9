"""What converting COCO-17 keypoints to the Human3.6M 17 joints costs, measured on synthetic people.

    python benchmarks/coco_conversion.py [--model_path CKPT --data_3d ARCHIVE] [--subjects S9,S11]
                                         [--every N] [--device cpu]

Without --model_path, the tiny synthetic set is made in a temporary folder and a ci-profile model
is trained on it (under a minute on 2 CPU cores); with it, --data_3d must be the 3D archive of the
synthetic set the model was trained on (such as data/synthetic/small/data_3d_h36m.npz).

The synthetic 32-joint skeleton has no face, so COCO keypoints are modelled from it: the head's
centre half way between the 32-joint 'Nose' (the neck/nose joint) and 'Head' (the top of the head),
the facing direction from the hips' and shoulders' left-right axis and the neck-to-head 'up'; the
COCO nose 10 cm in front of the head's centre (1 cm lower), the eyes 8 cm in front, 3 cm higher and
3 cm to either side, the ears 7.5 cm to either side; hips, knees, ankles, shoulders, elbows and
wrists are the motion-capture joints themselves. A real detector's hip and shoulder keypoints sit
elsewhere on the body than motion-capture joint centres (the hips lower and wider, the shoulders
higher), and real heads turn and tilt, so these figures are a lower bound on the conversion's cost.

Both the true Human3.6M joints and the modelled COCO keypoints are projected through the cameras
without detector noise; the COCO ones are converted back (iivformer.keypoints.coco_to_h36m).
Printed: (a) per Human3.6M joint, the mean pixel distance of the converted 2D to the true
projection, and the conversion applied in 3D (mm, for scale); (b) Protocol 1 (MPJPE) of the model
on the same frames from the true Human3.6M 2D and from the converted 2D, and the difference.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the figures only, no progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iivformer import cameras, metrics, skeleton  # noqa: E402
from iivformer.checkpoint import build_model, load_checkpoint  # noqa: E402
from iivformer.evaluate import checkpoint_rig, predict, trained_views  # noqa: E402
from iivformer.keypoints import COCO17_NAMES, COCO_TO_H36M, coco_to_h36m  # noqa: E402
from iivformer.npz import read_npz  # noqa: E402
from iivformer.prepare import Normalization, normalize_in_place  # noqa: E402

J32 = skeleton.JOINT_INDEX_32
LIMBS = {"left_shoulder": "LShoulder", "right_shoulder": "RShoulder", "left_elbow": "LElbow", "right_elbow": "RElbow",
         "left_wrist": "LWrist", "right_wrist": "RWrist", "left_hip": "LHip", "right_hip": "RHip",
         "left_knee": "LKnee", "right_knee": "RKnee", "left_ankle": "LFoot", "right_ankle": "RFoot"}


def _unit(vectors):
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def coco_from_h36m32(positions: np.ndarray) -> np.ndarray:
    """Modelled COCO-17 keypoints (F, 17, 3) of 32-joint positions (F, 32, 3) in mm (module docstring)."""
    centre = (positions[:, J32["Nose"]] + positions[:, J32["Head"]]) / 2
    up = _unit(positions[:, J32["Head"]] - positions[:, J32["Nose"]])
    left = (positions[:, J32["LHip"]] - positions[:, J32["RHip"]]) + (positions[:, J32["LShoulder"]]
                                                                       - positions[:, J32["RShoulder"]])
    forward = _unit(np.cross(left, up))
    left = np.cross(up, forward)
    face = {"nose": 100 * forward - 10 * up,
            "left_eye": 80 * forward + 30 * up + 30 * left, "right_eye": 80 * forward + 30 * up - 30 * left,
            "left_ear": 75 * left, "right_ear": -75 * left}
    coco = np.empty((len(positions), len(COCO17_NAMES), 3))
    for index, name in enumerate(COCO17_NAMES):
        coco[:, index] = centre + face[name] if name in face else positions[:, J32[LIMBS[name]]]
    return coco


def _train_ci_model(folder: Path) -> tuple:
    from iivformer import config, prepare, synthetic, train

    paths = synthetic.write_dataset(folder, preset="tiny", progress=False)
    train.train(config.training_config("ci", device="cpu"), prepare.prepare(*paths), folder / "ci.pth",
                folder / "ci.log", progress=False)
    return folder / "ci.pth", paths[0]


def measure(model_path, data_3d, subjects, every: int = 1, device="cpu") -> dict:
    checkpoint = load_checkpoint(model_path)
    model = build_model(checkpoint, source=str(model_path))
    normalization = Normalization.from_dict(checkpoint["normalization"])
    rig, views = checkpoint_rig(checkpoint, model_path), trained_views(checkpoint)
    positions = read_npz(data_3d, members=("positions_3d",))["positions_3d"]
    true_2d, converted_2d, targets, shift_3d = [], [], [], []
    for subject in subjects:
        chosen = [cameras.cameras_for(subject, rig)[view] for view in views]
        for recording, array in positions[subject].items():
            joints32 = np.asarray(array, dtype=np.float64)[::every] * 1000.0
            h36m = skeleton.to_17_joints(joints32)
            coco = coco_from_h36m32(joints32)
            true_2d.append(np.stack([cameras.project(h36m, cam) for cam in chosen], axis=1))
            converted_2d.append(coco_to_h36m(np.stack([cameras.project(coco, cam) for cam in chosen], axis=1))[0])
            targets.append(h36m - h36m[:, :1])
            shift_3d.append(np.linalg.norm(np.einsum("jk,fkc->fjc", COCO_TO_H36M, coco) - h36m, axis=-1))
    true_2d, converted_2d = np.concatenate(true_2d), np.concatenate(converted_2d)
    targets = np.concatenate(targets).astype(np.float32)
    pixel_error = np.linalg.norm(converted_2d - true_2d, axis=-1)  # (N, V, 17)
    results = {"frames": len(targets), "views": len(views),
               "pixels": dict(zip(skeleton.JOINT_NAMES, pixel_error.mean(axis=(0, 1)))),
               "mm_3d": dict(zip(skeleton.JOINT_NAMES, np.concatenate(shift_3d).mean(axis=0))),
               "pixels_mean": float(pixel_error.mean())}
    for name, inputs in (("true", true_2d), ("converted", converted_2d)):
        inputs = inputs.astype(np.float32)
        normalize_in_place(inputs, normalization)
        predicted = predict(model, inputs, device)
        results[f"p1_{name}"] = float(metrics.mpjpe(predicted, targets))
        results[f"p2_{name}"] = float(metrics.mpjpe(metrics.procrustes_align(predicted, targets), targets))
        results[f"p1_joints_{name}"] = metrics.per_joint_errors(predicted, targets).mean(axis=0)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", help="a checkpoint written by iivformer train (default: train a ci model)")
    parser.add_argument("--data_3d", help="the 3D archive of the synthetic set the model was trained on")
    parser.add_argument("--subjects", default="S9,S11")
    parser.add_argument("--every", type=int, default=1, help="use every N-th frame")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if bool(args.model_path) != bool(args.data_3d):
        parser.error("give both --model_path and --data_3d, or neither")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        model_path, data_3d = (args.model_path, args.data_3d) if args.model_path else _train_ci_model(Path(folder))
        results = measure(model_path, data_3d, args.subjects.split(","), args.every, args.device)
    print(f"COCO-17 -> Human3.6M-17 on {results['frames']} frames x {results['views']} views of "
          f"{args.subjects} ({Path(data_3d).parent.name if args.data_3d else 'tiny, ci model'}), no detector noise")
    print(f"{'joint':10}{'2D error (px)':>15}{'3D shift (mm)':>15}{'P1 true (mm)':>14}{'P1 conv. (mm)':>15}")
    for index, joint in enumerate(skeleton.JOINT_NAMES):
        print(f"{joint:10}{results['pixels'][joint]:15.2f}{results['mm_3d'][joint]:15.1f}"
              f"{results['p1_joints_true'][index]:14.1f}{results['p1_joints_converted'][index]:15.1f}")
    print(f"{'mean':10}{results['pixels_mean']:15.2f}{np.mean(list(results['mm_3d'].values())):15.1f}"
          f"{results['p1_true']:14.1f}{results['p1_converted']:15.1f}")
    print(f"P1: {results['p1_true']:.2f} mm from the true Human3.6M 2D, {results['p1_converted']:.2f} mm from the "
          f"converted COCO 2D: {results['p1_converted'] - results['p1_true']:+.2f} mm")
    print(f"P2: {results['p2_true']:.2f} mm and {results['p2_converted']:.2f} mm: "
          f"{results['p2_converted'] - results['p2_true']:+.2f} mm")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
