"""Reference methods on the same data, to put the model's errors in context.

- mean pose: predict the training subjects' mean root-relative pose for every frame
  (what a model that ignores its input would reach);
- triangulation: the classical multi-view answer, no learning. Linear least squares on the
  undistorted normalised image coordinates (x, y) of each view: with r1, r2, r3 the columns of the
  camera-to-world rotation and t the camera centre, each view adds the two rows
  ``(x r3 - r1) . (X - t) = 0`` and ``(y r3 - r2) . (X - t) = 0``; every joint of every frame is
  solved on its own, from 2 or more views.
Both return poses (N, J, 3) in millimetres, root-relative, in the world frame, like the model.
"""
import numpy as np

from iivformer import cameras, skeleton
from iivformer.archives import Archives, load_archives
from iivformer.errors import IIVFormerError
from iivformer.prepare import Normalization, Split, prepare


def mean_pose(train: Split, test: Split) -> np.ndarray:
    """The mean training pose repeated for every test frame, (N_test, J, 3) mm."""
    if len(train) == 0:
        raise IIVFormerError("the mean pose needs training frames: prepare the data with training subjects")
    mean = train.targets[:, 0].mean(axis=0, dtype=np.float64).astype(np.float32)
    return np.broadcast_to(mean, test.targets[:, 0].shape).copy()


def triangulate(normalized: np.ndarray, rotations: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """World points (..., 3) from undistorted normalised coordinates (..., V, 2) seen by V >= 2
    cameras with camera-to-world rotations (V, 3, 3) and centres (V, 3), by linear least squares."""
    x, y = normalized[..., 0:1], normalized[..., 1:2]  # (..., V, 1)
    r1, r2, r3 = rotations[:, :, 0], rotations[:, :, 1], rotations[:, :, 2]  # (V, 3) columns
    rows = np.concatenate([x * r3 - r1, y * r3 - r2], axis=-2)  # (..., 2V, 3)
    targets = np.einsum("...ri,ri->...r", rows, np.concatenate([centres, centres]))  # rows . t
    normal = np.einsum("...ri,...rj->...ij", rows, rows)
    return np.linalg.solve(normal, np.einsum("...ri,...r->...i", rows, targets)[..., None])[..., 0]


def triangulation(split: Split, normalization: Normalization, views=None, axis_views=None, rig=None) -> np.ndarray:
    """Triangulate every frame of a split from its (denormalised) 2D detections of `views` (camera
    indices; default all the split has), (N, J, 3) mm, root-relative. `axis_views`: the camera of
    each view axis of the split's inputs (default 0, 1, ...). The cameras are the `rig`'s, or each
    subject's own Human3.6M calibration."""
    axis_views = list(range(split.inputs.shape[1])) if axis_views is None else list(axis_views)
    views = axis_views if views is None else list(views)
    if len(views) < 2:
        raise IIVFormerError(f"triangulation needs 2 or more views, not {len(views)} ({views})")
    axes = [axis_views.index(view) for view in views]
    predictions = np.empty(split.targets[:, 0].shape, dtype=np.float32)
    subjects = split.subjects
    for subject in np.unique(subjects):
        rows = np.flatnonzero(subjects == subject)
        chosen = [cameras.cameras_for(str(subject), rig)[view] for view in views]
        pixels = normalization.invert(split.inputs[rows])[:, axes]  # (n, V', J, 2)
        normalized = np.stack([cameras.undistort((pixels[:, v] - cam.center) / cam.focal_length, cam)
                               for v, cam in enumerate(chosen)], axis=2)  # (n, J, V', 2)
        points = triangulate(normalized, np.stack([cam.rotation for cam in chosen]),
                             np.stack([cam.translation for cam in chosen]))  # (n, J, 3) world mm
        predictions[rows] = points - points[:, :1]
    return predictions


METHODS = ("model", "triangulation", "mean-pose")
_IDENTITY = Normalization(np.zeros((1, 1, 2), np.float32), np.ones((1, 1, 2), np.float32))  # inputs stay pixels


def evaluate_method(method: str, data_3d, data_2d, subjects=skeleton.TEST_SUBJECTS,
                    train_subjects=skeleton.TRAIN_SUBJECTS, views=None):
    """The Evaluation, with its provenance, of a reference method ("triangulation" from the raw 2D of
    `views`, or "mean-pose", the mean of `train_subjects`) on the frames of `subjects`. `data_3d`,
    `data_2d`: the archives' paths, or `data_3d` the :class:`Archives` already loaded (as in `prepare`)."""
    from iivformer import provenance
    from iivformer.evaluate import evaluate_predictions

    if method == "triangulation":
        prepared = prepare(data_3d, data_2d, train_subjects=(), test_subjects=subjects, normalization=_IDENTITY)
        predictions = triangulation(prepared.test, _IDENTITY, views, rig=prepared.rig)
        normalization = "none (raw pixels)"
    elif method == "mean-pose":
        prepared = prepare(data_3d, data_2d, train_subjects=train_subjects, test_subjects=subjects)
        predictions, normalization = mean_pose(prepared.train, prepared.test), "not used"
        views = []
    else:
        raise IIVFormerError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    evaluation = evaluate_predictions(predictions, prepared.test)
    if isinstance(data_3d, Archives):
        data_3d, data_2d = data_3d.path_3d, data_3d.path_2d
    evaluation.provenance = provenance.describe(method, None, data_3d, data_2d, prepared.test_subjects,
                                                len(evaluation), None, normalization, views, prepared.rig)
    return evaluation


def evaluate_baselines(data_3d, data_2d=None, subjects=skeleton.TEST_SUBJECTS, views=None) -> dict:
    """{"triangulation": Evaluation, "mean pose": Evaluation} on the frames of `subjects`; the
    archives (paths, or `data_3d` an :class:`Archives`) are read once for both."""
    if not isinstance(data_3d, Archives):
        data_3d = load_archives(data_3d, data_2d, list(dict.fromkeys([*skeleton.TRAIN_SUBJECTS, *subjects])))
    return {"triangulation": evaluate_method("triangulation", data_3d, None, subjects, views=views),
            "mean pose": evaluate_method("mean-pose", data_3d, None, subjects)}
