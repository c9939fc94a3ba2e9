"""Protocol 1 and 2 evaluation per action, per joint and per frame, as the published code computes it.

Per action: recordings grouped by the text before the first space of their archive key, all frames
of the chosen subjects (S9 and S11 by default); the reported figure is the mean over the actions.
Protocol 1 is MPJPE; Protocol 2 is MPJPE after a similarity Procrustes alignment per frame.

An :class:`Evaluation` is computed once, saved with its provenance (:meth:`Evaluation.save`), and
reloaded (:meth:`Evaluation.load`) by whatever draws or tabulates it.
"""
import json
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from iivformer import metrics, prepare, provenance, runtime, skeleton
from iivformer.archives import Archives, read_npz, read_rig
from iivformer.cameras import camera_ids
from iivformer.checkpoint import build_model, load_checkpoint
from iivformer.config import EVAL_BATCH_SIZE
from iivformer.errors import DataError, IIVFormerError, one_line
from iivformer.files import atomic_write
from iivformer.prepare import Normalization, Split
from iivformer.rig import rig_from_dict

PROTOCOLS = ("p1", "p2")
_SAMPLE_FIELDS = ("predictions", "targets", "subjects", "recordings", "actions", "frame_index")


@torch.no_grad()
def predict_on_device(model: torch.nn.Module, inputs: np.ndarray, device="cpu", batch_size: int = EVAL_BATCH_SIZE,
                      view_mask=None, precision: str = "fp32") -> torch.Tensor:
    """3D poses (N, J, 3) in millimetres, float32 on `device`, for normalised 2D inputs (N, V, J, 2),
    from the views where `view_mask` ((V,) for every sample, or (N, V) per sample) is True (default:
    all); `precision` "bf16" runs the forward pass under bfloat16 autocast. Batches go to the device
    one by one; the predictions stay there."""
    device = torch.device(device)
    model = model.to(device).eval()
    autocast = runtime.forward_context(precision, device)
    view_mask = None if view_mask is None else torch.as_tensor(view_mask, dtype=torch.bool, device=device)
    outputs = []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc="predicting", unit="batch", leave=False, disable=len(starts) < 8):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size])).to(device)
        mask = view_mask[start:start + batch_size] if view_mask is not None and view_mask.ndim == 2 else view_mask
        with autocast:
            outputs.append(model(batch, mask)[:, 0].float())
    if not outputs:
        return torch.zeros((0,) + inputs.shape[2:3] + (3,), dtype=torch.float32, device=device)
    return torch.cat(outputs)


def predict(model: torch.nn.Module, inputs: np.ndarray, device="cpu", batch_size: int = EVAL_BATCH_SIZE,
            view_mask=None) -> np.ndarray:
    """:func:`predict_on_device`, copied to the host as a float32 array (N, J, 3) mm."""
    return predict_on_device(model, inputs, device, batch_size, view_mask).cpu().numpy()


@dataclass
class Evaluation:
    """Predictions and errors of every sample, each traced back to subject, recording and frame.

    predictions, targets: (N, J, 3) mm; errors: {"p1": (N, J), "p2": (N, J)} per-joint errors in mm;
    subjects, recordings ('Walking 1'), actions ('Walking'): (N,) strings; frame_index: (N,) ints;
    provenance: where the numbers come from (:func:`iivformer.provenance.describe`).
    """

    predictions: np.ndarray
    targets: np.ndarray
    errors: dict
    subjects: np.ndarray
    recordings: np.ndarray
    actions: np.ndarray
    frame_index: np.ndarray
    provenance: dict = field(default_factory=dict)

    @property
    def rig(self):
        """The rig of the evaluated archives (:class:`iivformer.rig.Rig`), None for Human3.6M's cameras."""
        stored = (self.provenance or {}).get("rig")
        return None if stored is None else rig_from_dict(stored, "the evaluation's provenance")

    def __len__(self) -> int:
        return len(self.predictions)

    @property
    def action_names(self) -> list:
        """Actions present, in the Human3.6M order."""
        present = set(self.actions.tolist())
        return [a for a in skeleton.ACTIONS if a in present] + sorted(present - set(skeleton.ACTIONS))

    def per_action(self, protocol: str = "p1") -> dict:
        """{action: mean error in mm, ..., "mean": mean over the actions}."""
        if len(self) == 0:
            raise IIVFormerError("the evaluation holds no frames: choose subjects that have recordings")
        per_frame = self.errors[protocol].mean(axis=1, dtype=np.float64)
        names, group = np.unique(self.actions, return_inverse=True)  # one pass, however many actions
        means = dict(zip(names.tolist(), np.bincount(group, per_frame) / np.bincount(group)))
        table = {action: float(means[action]) for action in self.action_names}
        table["mean"] = float(np.mean(list(table.values())))
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
        """{"p1": {action: mm, ..., "mean": mm}, "p2": {...}}: what the tables show."""
        return {protocol: self.per_action(protocol) for protocol in protocols}

    def summary(self, protocols=PROTOCOLS) -> dict:
        """The results with their provenance: the layout ``iivformer evaluate --json`` writes."""
        return {**self.results(protocols), "provenance": self.provenance}

    def other_metrics(self) -> dict:
        """Overall figures beyond P1/P2 (mm, or %): N-MPJPE, PCK at 150 mm, AUC over 0-150 mm, and
        the velocity error over consecutive frames of each recording (mm per frame)."""
        steps = (self.frame_index[1:] == self.frame_index[:-1] + 1) & (self.subjects[1:] == self.subjects[:-1]) \
            & (self.recordings[1:] == self.recordings[:-1])
        velocity = np.diff(self.predictions - self.targets, axis=0)[steps]
        return {"n_mpjpe": metrics.n_mpjpe(self.predictions, self.targets),
                "pck_150mm": metrics.pck(self.predictions, self.targets, 150.0),
                "auc": metrics.auc(self.predictions, self.targets),
                "mpjve": float(np.linalg.norm(velocity, axis=-1).mean()) if len(velocity) else None}

    def save(self, path) -> None:
        """Write every sample and the tables (with the provenance) to one .npz file, atomically."""
        summary = {**self.summary(), "per_joint": {p: self.per_joint(p) for p in PROTOCOLS},
                   "metrics": self.other_metrics()}
        arrays = {name: getattr(self, name) for name in _SAMPLE_FIELDS}
        arrays.update({f"errors_{p}": self.errors[p] for p in PROTOCOLS},
                      summary=np.array(json.dumps(summary, allow_nan=False)))

        def write(temporary):
            with open(temporary, "wb") as stream:
                np.savez_compressed(stream, **{k: np.asarray(v) for k, v in arrays.items()})

        atomic_write(path, write)

    @classmethod
    def load(cls, path) -> "Evaluation":
        """An evaluation :meth:`save` wrote (read safely: nothing in the file can run code)."""
        contents = read_npz(path)
        missing = [name for name in _SAMPLE_FIELDS + ("errors_p1", "errors_p2", "summary") if name not in contents]
        if missing:
            raise DataError(f"{path}: not a saved evaluation (missing {', '.join(missing)})")
        try:
            summary = json.loads(str(contents["summary"]))
            samples = {name: contents[name] for name in _SAMPLE_FIELDS}
            errors = {p: contents[f"errors_{p}"] for p in PROTOCOLS}
            count = len(samples["predictions"])
            if any(len(v) != count for v in [*samples.values(), *errors.values()]):
                raise ValueError("its arrays have different lengths")
        except (ValueError, TypeError, RecursionError) as error:
            raise DataError(f"{path}: damaged evaluation ({type(error).__name__}: {one_line(error)[:200]})") from None
        return cls(errors=errors, provenance=summary.get("provenance", {}), **samples)


def evaluate_split(model: torch.nn.Module, split: Split, device="cpu", batch_size: int = EVAL_BATCH_SIZE,
                   view_mask=None, precision: str = "fp32") -> Evaluation:
    """Run the model on a prepared split and compute per-joint P1 and P2 errors of every frame: one
    prediction pass, the errors (the Procrustes alignment batched) computed on the device in float64
    (float32 where the device has no float64), one copy to the host at the end."""
    predictions = predict_on_device(model, split.inputs, device, batch_size, view_mask, precision)
    return evaluate_predictions(predictions, split)


def _errors(predictions, targets) -> dict:
    """Per-joint P1 and P2 errors (N, J) as float32 host arrays; tensors stay on their device."""
    errors = {"p1": metrics.per_joint_errors(predictions, targets),
              "p2": metrics.per_joint_errors(metrics.procrustes_align(predictions, targets), targets)}
    if isinstance(predictions, torch.Tensor):
        return {k: v.float().cpu().numpy() for k, v in errors.items()}
    return {k: v.astype(np.float32) for k, v in errors.items()}


def evaluate_predictions(predictions, split: Split, provenance: dict = None) -> Evaluation:
    """Per-joint P1 and P2 errors of predictions (N, J, 3) mm (an array, or a tensor on any device,
    where the errors are then computed) for the frames of a split."""
    targets = split.targets[:, 0]
    if isinstance(predictions, torch.Tensor):
        wide = torch.float32 if predictions.device.type == "mps" else torch.float64
        errors = _errors(predictions.to(wide), torch.from_numpy(targets).to(predictions.device, wide))
        predictions = predictions.float().cpu().numpy()
    else:
        errors = _errors(predictions, targets)
    return Evaluation(predictions, targets, errors, split.subjects, split.recordings, split.actions,
                      split.frame_index, provenance or {})


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
                        train_subjects=skeleton.TRAIN_SUBJECTS, keep_archives=False, views=None) -> tuple:
    """(checkpoint, model, prepared) ready to evaluate `subjects` (prepared.test) on `views` (default:
    the views the model was trained on; a subset of them needs a model trained with view dropout).
    The project's checkpoints carry their normalisation statistics; a plain state dict such as the
    published cpn.pth does not, so they are recomputed from `train_subjects`, as the published
    evaluation does."""
    checkpoint = load_checkpoint(model_path)
    model = build_model(checkpoint, source=str(model_path))
    trained = trained_views(checkpoint)
    view_mask(checkpoint, views, model_path)  # refuse views the model cannot take before reading data
    check_same_cameras(checkpoint, data_3d.rig if isinstance(data_3d, Archives) else read_rig(data_2d),
                       model_path, data_2d)
    stored = checkpoint.get("normalization")
    normalization = Normalization.from_dict(stored) if stored else None
    prepared = prepare.prepare(data_3d, data_2d, train_subjects=() if normalization else train_subjects,
                               test_subjects=subjects, normalization=normalization, keep_archives=keep_archives,
                               views=trained)
    return checkpoint, model, prepared


def checkpoint_rig(checkpoint: dict, model_path="checkpoint"):
    """The rig a checkpoint was trained on (:class:`iivformer.rig.Rig`), None for Human3.6M's cameras
    (and for a plain state dict such as cpn.pth)."""
    stored = checkpoint.get("rig")
    return None if stored is None else rig_from_dict(stored, f"{model_path} (its rig)")


def check_same_cameras(checkpoint: dict, rig, model_path, data_2d) -> None:
    """One IIVFormerError line unless the archives' cameras (`rig`, None: Human3.6M) are, by id and
    order, the cameras the checkpoint's model was trained on."""
    trained_rig = checkpoint_rig(checkpoint, model_path)
    trained, given = camera_ids(trained_rig), camera_ids(rig)
    if trained != given:
        def name(r):
            return "Human3.6M" if r is None else f"rig {r.name!r}"
        raise IIVFormerError(f"{model_path}: trained on the cameras {', '.join(trained)} ({name(trained_rig)}), but "
                             f"{data_2d} holds the cameras {', '.join(given)} ({name(rig)}); a model lifts only the "
                             "cameras it was trained on")


def trained_views(checkpoint: dict) -> list:
    """The cameras a checkpoint's model was trained on, in order (a plain state dict: all of them)."""
    return list(checkpoint.get("views") or range(checkpoint["model_config"]["num_view"]))


def view_mask(checkpoint: dict, views, model_path):
    """None for the trained views; else the (V,) bool mask of `views` among them, which only a model
    trained with view dropout accepts (one IIVFormerError line otherwise)."""
    trained = trained_views(checkpoint)
    if views is None or list(views) == trained:
        return None
    outside = [view for view in views if view not in trained]
    if outside:
        raise IIVFormerError(f"{model_path}: views {outside} are not among the views {trained} the model was trained on")
    if not checkpoint.get("train_config", {}).get("view_dropout"):
        raise IIVFormerError(f"{model_path}: trained on views {trained} without view dropout; evaluate it on those "
                             "views, or train with --view_dropout to evaluate on a subset")
    return np.array([view in views for view in trained])


def evaluate_loaded(checkpoint: dict, model, prepared, model_path, data_3d, data_2d, device="auto",
                    views=None, precision: str = "fp32", compile: bool = False) -> Evaluation:
    """Evaluate what :func:`load_for_evaluation` returned on its test split (from `views`, default
    those the model was trained on), with the provenance; `precision` "bf16" (autocast) and `compile`
    (torch.compile; a warning line and eager where it cannot run) choose how the forward pass runs."""
    device = runtime.resolve_device(device)
    if compile:
        model, warning = runtime.compiled(model, device)
        if warning:
            print(warning, file=sys.stderr)
    evaluation = evaluate_split(model, prepared.test, device, view_mask=view_mask(checkpoint, views, model_path),
                                precision=precision)
    bad = int(np.count_nonzero(~np.isfinite(evaluation.predictions).all(axis=(1, 2))))
    if bad:
        raise IIVFormerError(f"{model_path}: the model's predictions are not finite for {bad} of "
                             f"{len(evaluation)} frames (weights too large?)")
    normalization = ("stored in the checkpoint" if checkpoint.get("normalization") else
                     f"recomputed from the training subjects {', '.join(prepared.train_subjects)}")
    evaluation.provenance = provenance.describe("IIVFormer", model_path, data_3d, data_2d, prepared.test_subjects,
                                                len(evaluation), device, normalization,
                                                views if views is not None else prepared.views, prepared.rig)
    if precision != "fp32" or compile:
        evaluation.provenance["forward"] = {"precision": precision, "compile": bool(compile)}
    return evaluation


def evaluate_checkpoint(model_path, data_3d, data_2d, subjects=skeleton.TEST_SUBJECTS,
                        train_subjects=skeleton.TRAIN_SUBJECTS, device="auto", views=None,
                        precision: str = "fp32", compile: bool = False) -> Evaluation:
    """Evaluate a checkpoint (the project's, or a plain state dict) on the frames of `subjects`,
    from `views` (camera indices; default: those it was trained on); see :func:`evaluate_loaded`
    for `precision` and `compile`."""
    checkpoint, model, prepared = load_for_evaluation(model_path, data_3d, data_2d, subjects, train_subjects,
                                                      views=views)
    return evaluate_loaded(checkpoint, model, prepared, model_path, data_3d, data_2d, device, views,
                           precision, compile)
