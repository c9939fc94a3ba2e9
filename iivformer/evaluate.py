"""Protocol 1 and 2 evaluation per action, per joint and per frame, as the published code computes it.

Per action: archive keys grouped by the text before the first space, all frames of the chosen
subjects (S9 and S11 by default); the reported figure is the mean over the actions.
Protocol 1 is MPJPE; Protocol 2 is MPJPE after a similarity Procrustes alignment per frame.
"""
import json
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from iivformer import data, metrics, skeleton
from iivformer.checkpoint import build_model, load_checkpoint
from iivformer.data import Normalization, Split
from iivformer.errors import IIVFormerError

PROTOCOLS = ("p1", "p2")
PUBLISHED_MM = {"p1": 30.9, "p2": 24.0}  # the paper's Human3.6M figures with CPN detections


@torch.no_grad()
def predict(model: torch.nn.Module, inputs: np.ndarray, device="cpu", batch_size: int = 4096) -> np.ndarray:
    """3D poses (N, J, 3) in millimetres for normalised 2D inputs (N, V, J, 2)."""
    model = model.to(device).eval()
    outputs = []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", leave=False, disable=len(starts) < 8):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size])).to(device)
        outputs.append(model(batch)[:, 0].float().cpu())
    if not outputs:
        return np.zeros((0,) + inputs.shape[2:3] + (3,), dtype=np.float32)
    return torch.cat(outputs).numpy()


@dataclass
class Evaluation:
    """Predictions and errors of every sample, each traced back to subject, key and frame.

    predictions, targets: (N, J, 3) mm; errors: {"p1": (N, J), "p2": (N, J)} per-joint errors in mm.
    """

    predictions: np.ndarray
    targets: np.ndarray
    errors: dict
    subjects: np.ndarray
    keys: np.ndarray
    actions: np.ndarray
    frame_index: np.ndarray

    def __len__(self) -> int:
        return len(self.predictions)

    @property
    def action_names(self) -> list:
        """Actions present, in the Human3.6M order."""
        present = set(self.actions.tolist())
        return [a for a in skeleton.ACTIONS if a in present] + sorted(present - set(skeleton.ACTIONS))

    def per_action(self, protocol: str = "p1") -> dict:
        """{action: mean error in mm, ..., "mean": mean over the actions}."""
        per_frame = self.errors[protocol].mean(axis=1, dtype=np.float64)
        table = {action: float(per_frame[self.actions == action].mean()) for action in self.action_names}
        table["mean"] = float(np.mean(list(table.values()))) if table else float("nan")
        return table

    def per_joint(self, protocol: str = "p1") -> dict:
        """{joint name: mean error in mm} over all frames."""
        means = self.errors[protocol].mean(axis=0, dtype=np.float64)
        return dict(zip(skeleton.JOINT_NAMES, means.tolist()))

    def per_frame(self, protocol: str = "p1") -> np.ndarray:
        """Mean error over joints of every frame, (N,) mm."""
        return self.errors[protocol].mean(axis=1)

    def worst_frames(self, action: str = None, count: int = 10, protocol: str = "p1") -> np.ndarray:
        """Sample indices of the `count` largest per-frame errors (of one action, if given)."""
        per_frame = self.per_frame(protocol)
        candidates = np.flatnonzero(self.actions == action) if action else np.arange(len(per_frame))
        return candidates[np.argsort(per_frame[candidates])[::-1][:count]]

    def results(self, protocols=PROTOCOLS) -> dict:
        """{"p1": {action: mm, ..., "mean": mm}, "p2": {...}} — the --json layout."""
        return {protocol: self.per_action(protocol) for protocol in protocols}


def evaluate_split(model: torch.nn.Module, split: Split, device="cpu", batch_size: int = 4096) -> Evaluation:
    """Run the model on a prepared split and compute per-joint P1 and P2 errors of every frame."""
    return evaluate_predictions(predict(model, split.inputs, device, batch_size), split)


def evaluate_predictions(predictions: np.ndarray, split: Split) -> Evaluation:
    """Per-joint P1 and P2 errors of predictions (N, J, 3) mm for the frames of a split."""
    targets = split.targets[:, 0]
    errors = {
        "p1": metrics.per_joint_errors(predictions, targets),
        "p2": metrics.per_joint_errors(metrics.procrustes_align(predictions, targets), targets),
    }
    return Evaluation(predictions, targets, {k: v.astype(np.float32) for k, v in errors.items()},
                      split.subjects, split.keys, split.actions, split.frame_index)


def parse_subjects(text: str) -> list:
    """Subjects from the command line: '["S9", "S11"]', "['S9', 'S11']" or 'S9,S11'."""
    cleaned = text.strip()
    if cleaned.startswith("["):
        try:
            subjects = json.loads(cleaned.replace("'", '"'))
        except json.JSONDecodeError:
            raise IIVFormerError(f"--subjects: cannot read {text!r}; write it as '[\"S9\", \"S11\"]'") from None
    else:
        subjects = [part.strip() for part in cleaned.split(",") if part.strip()]
    if not subjects or not all(isinstance(s, str) and s for s in subjects):
        raise IIVFormerError(f"--subjects: expected a list of subject names, got {text!r}")
    return subjects


def load_for_evaluation(model_path, data_3d, data_2d, subjects=skeleton.TEST_SUBJECTS,
                        train_subjects=skeleton.TRAIN_SUBJECTS, keep_archives=False) -> tuple:
    """(checkpoint, model, prepared) ready to evaluate `subjects` (prepared.test). The project's
    checkpoints carry their normalisation statistics; a plain state dict such as the published
    cpn.pth does not, so they are recomputed from `train_subjects`, as the published evaluation does."""
    checkpoint = load_checkpoint(model_path)
    model = build_model(checkpoint, source=str(model_path))
    stored = checkpoint.get("normalization")
    normalization = Normalization.from_dict(stored) if stored else None
    prepared = data.prepare(data_3d, data_2d, train_subjects=() if normalization else train_subjects,
                            test_subjects=subjects, normalization=normalization, keep_archives=keep_archives)
    return checkpoint, model, prepared


def evaluate_checkpoint(model_path, data_3d, data_2d, subjects=skeleton.TEST_SUBJECTS,
                        train_subjects=skeleton.TRAIN_SUBJECTS, device="auto") -> Evaluation:
    """Evaluate a checkpoint (the project's, or a plain state dict) on the frames of `subjects`."""
    from iivformer.train import resolve_device

    _, model, prepared = load_for_evaluation(model_path, data_3d, data_2d, subjects, train_subjects)
    return evaluate_split(model, prepared.test, resolve_device(device))


def format_table(results: dict) -> str:
    """A text table in millimetres: one row per action and a last row with the mean over actions."""
    protocols = list(results)
    actions = [a for a in results[protocols[0]] if a != "mean"]
    width = max(len(a) for a in actions + ["action"]) + 2
    lines = ["action".ljust(width) + "".join(f"{p.upper() + ' (mm)':>10}" for p in protocols)]
    for action in actions + ["mean"]:
        lines.append(action.ljust(width) + "".join(f"{results[p][action]:10.2f}" for p in protocols))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)
