"""3D poses from the user's own 2D keypoints (:mod:`iivformer.keypoints`) with a trained checkpoint.

:func:`predict_keypoints` normalises the keypoints with the statistics stored in the checkpoint and
runs the same batched forward as evaluation (:func:`iivformer.evaluate.predict`), so that the 2D of
a test recording gives the poses ``iivformer evaluate`` computes for those frames. Output: poses
(T, 17, 3) in millimetres, root-relative (the pelvis, joint 0, near the origin: the model predicts it
too, and it is kept as evaluation keeps it), in the world frame of the cameras the model was trained
on; with a rig (calibrated cameras), also the absolute root (the pelvis).

Checks before any computation, each one line: the checkpoint stores its normalisation (a plain
state dict such as the published cpn.pth does not); the keypoints have as many views as the model;
their ``camera_ids`` (when given) are the model's cameras in order, and the rig (when given) holds
those cameras (taken by id); the pixel values are sane (:mod:`iivformer.keypoints`).

Missing joints: a model trained with view dropout leaves a view with a missing joint out of that
frame, as long as one view with all 17 joints remains (``views_used`` says which views each frame
used); any other model, or a frame without a complete view, is refused with one line saying where
the first missing joint is.

The root (with a rig): the pelvis triangulated by linear least squares from the undistorted image
points of every view where the pelvis is present (2 or more); in a frame where only one view has
it, the root is placed so that the predicted pose reprojects onto that view's joints (depth then
comes from the pose's size: less accurate). ``root_views`` says how many views each frame's root
came from.

Files (:meth:`Prediction.save`): ``--out result.npz`` (or ``result.json``, or ``result``) writes
both ``result.npz`` and ``result.json``, each atomically, holding the same numbers.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iivformer import cameras, provenance, runtime, skeleton
from iivformer.checkpoint import build_model, load_checkpoint
from iivformer.config import EVAL_BATCH_SIZE
from iivformer.errors import CheckpointError, DataError, IIVFormerError, printable
from iivformer.evaluate import checkpoint_rig, predict, trained_views
from iivformer.files import atomic_write, write_text
from iivformer.keypoints import Keypoints, keypoints_from_arrays, read_keypoints
from iivformer.npz import read_npz
from iivformer.prepare import Normalization, normalize_in_place

FORMAT = "iivformer-prediction"
VERSION = 1
COORDINATES = ("millimetres, in the world frame of the model's cameras; poses relative to the pelvis (joint 0, "
               "near the origin: the model's own joint-0 output is kept, as evaluation keeps it); root: the pelvis, "
               "absolute")


@dataclass
class Prediction:
    """What :func:`predict_keypoints` returns and :meth:`save` writes.

    poses: (T, 17, 3) float32 mm, root-relative, world frame; root: (T, 3) float64 mm absolute
    (None without a rig); root_views: (T,) int, the views the root was triangulated from (1: fitted
    from the predicted pose in one view; None without a rig); views_used: (T, V) bool, the views the
    model lifted each frame from; camera_ids: the model's cameras, the view axis in order;
    provenance: checkpoint, keypoint file, cameras, normalisation, versions, device and date.
    """

    poses: np.ndarray
    views_used: np.ndarray
    camera_ids: list
    root: np.ndarray = None
    root_views: np.ndarray = None
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.poses)

    @property
    def absolute(self) -> np.ndarray:
        """(T, 17, 3) mm absolute world positions (needs the root: predict with a rig)."""
        if self.root is None:
            raise IIVFormerError("no root: predict with the cameras' rig to place the poses in the world")
        return self.poses + self.root[:, None].astype(np.float32)

    def to_dict(self) -> dict:
        """The JSON layout (plain lists)."""
        return {"format": FORMAT, "version": VERSION, "joints": list(skeleton.JOINT_NAMES),
                "camera_ids": list(self.camera_ids), "coordinates": COORDINATES,
                "poses": self.poses.tolist(), "views_used": self.views_used.tolist(),
                "root": None if self.root is None else self.root.tolist(),
                "root_views": None if self.root_views is None else self.root_views.tolist(),
                "provenance": self.provenance}

    def save(self, out) -> tuple:
        """Write ``<out>.npz`` and ``<out>.json`` (see :func:`output_paths`), atomically; their paths."""
        path_npz, path_json = output_paths(out)
        arrays = {"poses": self.poses, "views_used": self.views_used,
                  "camera_ids": np.array(self.camera_ids, dtype=str),
                  "joints": np.array(skeleton.JOINT_NAMES), "format": np.array(FORMAT),
                  "provenance": np.array(json.dumps(self.provenance, allow_nan=False))}
        if self.root is not None:
            arrays.update(root=self.root, root_views=self.root_views)

        def write(temporary):
            with open(temporary, "wb") as stream:
                np.savez_compressed(stream, **arrays)

        atomic_write(path_npz, write)
        write_text(path_json, _json_text(self.to_dict()))
        return path_npz, path_json

    @classmethod
    def load(cls, path) -> "Prediction":
        """A prediction :meth:`save` wrote, from its .npz or its .json (read safely)."""
        path = Path(path)
        try:
            if path.suffix.lower() == ".json":
                with open(path, encoding="utf-8") as stream:
                    data = json.load(stream)
                if data.get("format") != FORMAT:
                    raise ValueError("not a saved prediction")
                root = None if data["root"] is None else np.asarray(data["root"], dtype=np.float64)
                return cls(np.asarray(data["poses"], dtype=np.float32), np.asarray(data["views_used"], dtype=bool),
                           list(data["camera_ids"]), root,
                           None if data["root_views"] is None else np.asarray(data["root_views"], dtype=np.int64),
                           data["provenance"])
            contents = read_npz(path)
            if str(contents.get("format")) != FORMAT:
                raise ValueError("not a saved prediction")
            return cls(contents["poses"], contents["views_used"], [str(c) for c in contents["camera_ids"]],
                       contents.get("root"), contents.get("root_views"), json.loads(str(contents["provenance"])))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise DataError(f"{printable(path)}: not a saved prediction ({type(error).__name__})") from None


def _json_text(value: dict) -> str:
    """One key per line, each array on its line (compact: a long recording stays a small file)."""
    lines = [f" {json.dumps(key)}: {json.dumps(item, separators=(',', ':'), allow_nan=False)}"
             for key, item in value.items() if key != "provenance"]
    lines.append(f' "provenance": {json.dumps(value["provenance"], allow_nan=False)}')
    return "{\n" + ",\n".join(lines) + "\n}\n"


def output_paths(out) -> tuple:
    """(FILE.npz, FILE.json) for ``--out FILE.npz``, ``--out FILE.json`` or ``--out FILE``."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix.lower() in (".npz", ".json") else out
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


# ------------------------------------------------------------------------------ checks

def model_camera_ids(checkpoint: dict, model_path="checkpoint") -> list:
    """The ids of the cameras the checkpoint's model sees, in the order of its view axis (Human3.6M's
    ids when it was trained without a rig, and for a plain state dict)."""
    ids = cameras.camera_ids(checkpoint_rig(checkpoint, model_path))
    views = trained_views(checkpoint)
    if any(view >= len(ids) for view in views):
        raise CheckpointError(f"{model_path}: views {views} do not fit its {len(ids)} cameras")
    return [ids[view] for view in views]


def _normalization(checkpoint: dict, given, model_path, num_view: int) -> Normalization:
    if given is None:
        stored = checkpoint.get("normalization")
        if not stored:
            raise CheckpointError(
                f"{model_path}: a plain state dict (such as the published cpn.pth) without the 2D normalisation "
                "its training data gave; predict needs a checkpoint written by `iivformer train`, or, from Python, "
                "predict_keypoints(..., normalization=prepared.normalization) with the statistics "
                "iivformer.evaluate.load_for_evaluation recomputes from its training archives")
        given = Normalization.from_dict(stored)
    if given.mean.shape != (num_view, skeleton.NUM_JOINTS, 2) or given.std.shape != given.mean.shape:
        raise CheckpointError(f"{model_path}: the normalisation has shape {given.mean.shape}, but the model takes "
                              f"{num_view} views of {skeleton.NUM_JOINTS} joints")
    return given


def _check_views(keypoints: Keypoints, ids: list, model_path) -> None:
    if keypoints.views != len(ids):
        raise IIVFormerError(f"{printable(keypoints.source)}: keypoints from {keypoints.views} views, but {model_path} "
                             f"lifts {len(ids)} views (cameras {', '.join(map(printable, ids))}, in this order)")
    if keypoints.camera_ids is not None and keypoints.camera_ids != ids:
        raise IIVFormerError(f"{printable(keypoints.source)}: keypoints of the cameras "
                             f"{', '.join(map(printable, keypoints.camera_ids))}, but {model_path} was trained on the "
                             f"cameras {', '.join(map(printable, ids))}, in this order; a model lifts only the cameras "
                             "it was trained on, in their order")


def _rig_cameras(rig, ids: list, model_path) -> list:
    """The rig's cameras of the model's views, taken by id; one line unless the rig holds them all."""
    found = {camera.id: camera for camera in rig.cameras}
    absent = [camera_id for camera_id in ids if camera_id not in found]
    if absent:
        raise IIVFormerError(f"--rig {printable(rig.name)}: holds the cameras {', '.join(map(printable, rig.ids))}, "
                             f"but {model_path} was trained on the cameras {', '.join(map(printable, ids))}; give the "
                             "rig of the cameras the model was trained on")
    return [found[camera_id] for camera_id in ids]


def _present_views(keypoints: Keypoints, view_dropout: bool, model_path) -> np.ndarray:
    """(T, V) bool: the views each frame is lifted from; one IIVFormerError line where that cannot be."""
    complete = ~keypoints.missing.any(axis=2)
    if complete.all():
        return complete
    source = printable(keypoints.source)
    lower = " (or lower --min_score)" if keypoints.scored else ""
    if not view_dropout:
        raise IIVFormerError(
            f"{source}: {keypoints.missing_text()}, the first at {keypoints.first_missing()}; {model_path} was "
            f"trained without view dropout and needs all 17 joints in every view: fill the gaps{lower}, or use a "
            "model trained with --view_dropout, which leaves such a view out of that frame")
    empty = np.flatnonzero(~complete.any(axis=1))
    if len(empty):
        frame = int(empty[0])
        row = np.zeros_like(complete)
        row[frame] = True
        raise IIVFormerError(
            f"{source}: {len(empty)} of {keypoints.frames} frames have no view with all 17 joints, the first frame "
            f"{frame} (missing, the first: {keypoints.first_missing(row)}); the model needs one complete view per "
            f"frame: fill the gaps{lower}")
    return complete


# ------------------------------------------------------------------------------ the root

def _rays(points: np.ndarray, cams: list) -> np.ndarray:
    """Undistorted normalised image coordinates (T, V, J, 2) of pixels (T, V, J, 2)."""
    return np.stack([cameras.undistort((points[:, v] - cam.center) / cam.focal_length, cam)
                     for v, cam in enumerate(cams)], axis=1)


def _least_squares(normalized, rotations, centres, weights) -> np.ndarray:
    """Points r (T, 3) minimising sum_rows w ((x r3 - r1).(r - c))^2 + w ((y r3 - r2).(r - c))^2 over rows
    of normalised coordinates (T, R, 2), camera-to-world rotations (T, R, 3, 3), centres (T, R, 3)."""
    normalized = np.where(weights[..., None] > 0, normalized, 0.0)
    x, y = normalized[..., 0:1], normalized[..., 1:2]
    r1, r2, r3 = rotations[..., 0], rotations[..., 1], rotations[..., 2]
    scale = np.sqrt(np.concatenate([weights, weights], axis=-1))[..., None]
    rows = np.concatenate([x * r3 - r1, y * r3 - r2], axis=-2) * scale
    targets = np.einsum("tri,tri->tr", rows, np.concatenate([centres, centres], axis=-2))
    normal = np.einsum("tri,trj->tij", rows, rows)
    return np.linalg.solve(normal, np.einsum("tri,tr->ti", rows, targets)[..., None])[..., 0]


def locate_root(points: np.ndarray, missing: np.ndarray, cams: list, poses: np.ndarray, views_used) -> tuple:
    """(root (T, 3) mm, root_views (T,)): the pelvis triangulated from the views where it is present
    (2 or more), else placed so that the predicted root-relative `poses` (T, 17, 3) reproject onto
    the one complete view (see the module docstring). `points` (T, V, 17, 2) pixels, `missing` (T, V, 17)."""
    frames, views = points.shape[:2]
    normalized = _rays(np.nan_to_num(points), cams)  # (T, V, J, 2)
    rotations = np.stack([cam.rotation for cam in cams])  # (V, 3, 3)
    centres = np.stack([cam.translation for cam in cams])  # (V, 3)
    pelvis_seen = ~missing[:, :, 0]  # (T, V)
    counts = pelvis_seen.sum(axis=1)
    root = np.zeros((frames, 3))
    many = counts >= 2
    if many.any():
        root[many] = _least_squares(normalized[many, :, 0], np.broadcast_to(rotations, (int(many.sum()), views, 3, 3)),
                                    np.broadcast_to(centres, (int(many.sum()), views, 3)),
                                    pelvis_seen[many].astype(np.float64))
    single = np.flatnonzero(~many)
    if len(single):
        view = np.argmax(views_used[single], axis=1)  # a frame without 2 pelvis views has one complete view
        joints = skeleton.NUM_JOINTS
        root[single] = _least_squares(
            normalized[single, view], np.repeat(rotations[view][:, None], joints, axis=1),
            centres[view][:, None] - poses[single].astype(np.float64), np.ones((len(single), joints)))
    return root, np.maximum(counts, 1)


# ------------------------------------------------------------------------------ predicting

def predict_keypoints(model_path, keypoints, rig=None, device="auto", format: str = "h36m17",
                      min_score: float = 0.0, batch_size: int = EVAL_BATCH_SIZE, normalization: Normalization = None,
                      camera_ids=None) -> Prediction:
    """Lift the user's 2D keypoints to 3D with the checkpoint at `model_path` (see the module docstring).

    `keypoints`: a keypoint file (.npz or .json), a :class:`~iivformer.keypoints.Keypoints`, or an
    array (T, V, 17, 2 or 3) of pixels (with `camera_ids`, optional); `format` ("h36m17" or "coco17")
    and `min_score` apply to a file or an array. `rig`: an :class:`~iivformer.rig.Rig` or a spec for
    :func:`iivformer.rig.load_rig` (``h36m:S9``, a rig JSON, an anipose calibration.toml): then the
    absolute root is computed too. `normalization`: statistics to use instead of the checkpoint's
    (for a plain state dict such as cpn.pth)."""
    from iivformer.rig import Rig, load_rig

    checkpoint = load_checkpoint(model_path)
    model = build_model(checkpoint, source=str(model_path))
    num_view = model.config.num_view
    normalization_source = "stored in the checkpoint" if normalization is None else "given by the caller"
    normalization = _normalization(checkpoint, normalization, model_path, num_view)
    ids = model_camera_ids(checkpoint, model_path)
    rig = None if rig is None else rig if isinstance(rig, Rig) else load_rig(rig)
    rig_cams = None if rig is None else _rig_cameras(rig, ids, model_path)
    points, source_record = _read_input(keypoints, format, min_score, camera_ids)
    _check_views(points, ids, model_path)
    view_dropout = bool((checkpoint.get("train_config") or {}).get("view_dropout"))
    present = _present_views(points, view_dropout, model_path)

    inputs = points.points.astype(np.float32)
    normalize_in_place(inputs, normalization)
    inputs[~present] = 0.0  # absent views never reach the model's arithmetic anyway
    device = runtime.resolve_device(device)
    poses = _lift(model, inputs, present, device, batch_size, model_path)
    root = root_views = None
    if rig is not None:
        root, root_views = locate_root(points.points, points.missing, rig_cams, poses, present)
    record = {
        "method": "IIVFormer", "checkpoint": provenance.file_record(model_path),
        "keypoints": source_record, "format": points.format, "min_score": points.min_score,
        "frames": int(points.frames), "views": trained_views(checkpoint), "cameras": ids,
        "cameras_checked": ("the keypoint file's camera_ids" if points.camera_ids is not None else
                            "not checked: the keypoints name no cameras"),
        "rig": None if rig is None else rig.to_dict(),
        "normalization": normalization_source,
        "frames_with_views_left_out": int((~present).any(axis=1).sum()),
        "coordinates": COORDINATES, "versions": runtime.versions(), "device": runtime.describe_device(device),
        "date": provenance.now(),
    }
    record["checkpoint"]["published"] = provenance.PUBLISHED_CHECKPOINTS.get(record["checkpoint"]["sha256"])
    return Prediction(poses, present, ids, root, root_views, record)


def _read_input(keypoints, format: str, min_score: float, camera_ids) -> tuple:
    """(the :class:`~iivformer.keypoints.Keypoints` of what :func:`predict_keypoints` was given, the
    provenance record of its file or None)."""
    if isinstance(keypoints, Keypoints):
        return keypoints, None
    if isinstance(keypoints, (str, Path)):
        return read_keypoints(keypoints, format, min_score), provenance.file_record(keypoints)
    return keypoints_from_arrays(keypoints, camera_ids=camera_ids, format=format, min_score=min_score,
                                 source="keypoints"), None


def _lift(model, inputs: np.ndarray, present: np.ndarray, device, batch_size: int, model_path) -> np.ndarray:
    """Root-relative poses (T, 17, 3) of the normalised `inputs` (T, V, 17, 2) with the views `present`
    (T, V): the same batched forward as evaluation, one view mask at a time; non-finite ones refused."""
    poses = np.empty((len(inputs), skeleton.NUM_JOINTS, 3), dtype=np.float32)
    patterns, group = np.unique(present, axis=0, return_inverse=True)
    for index, pattern in enumerate(patterns):
        rows = np.flatnonzero(group.ravel() == index)
        poses[rows] = predict(model, inputs[rows], device, batch_size, None if pattern.all() else pattern)
    bad = int(np.count_nonzero(~np.isfinite(poses).all(axis=(1, 2))))
    if bad:
        raise IIVFormerError(f"{model_path}: the model's predictions are not finite for {bad} of {len(poses)} frames "
                             "(weights too large?)")
    return poses
