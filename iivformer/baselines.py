"""Reference methods on the same data, to put the model's errors in context.

- mean pose: predict the training subjects' mean root-relative pose for every frame
  (what a model that ignores its input would reach);
- triangulation: the classical multi-view answer, no learning: undistort each view's 2D joint,
  cast the 4 camera rays and take the point nearest to all of them (least squares).
Both return poses (N, J, 3) in millimetres, root-relative, in the world frame, like the model.
"""
import numpy as np

from iivformer import cameras
from iivformer.prepare import Normalization, Split


def mean_pose(train: Split, test: Split) -> np.ndarray:
    """The mean training pose repeated for every test frame, (N_test, J, 3) mm."""
    mean = train.targets[:, 0].mean(axis=0, dtype=np.float64).astype(np.float32)
    return np.broadcast_to(mean, test.targets[:, 0].shape).copy()


def triangulate_rays(origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Least-squares point nearest to V rays: origins (V, 3), unit directions (..., V, 3) -> (..., 3).

    Minimises sum_v |(I - d_v d_v^T)(X - c_v)|^2, i.e. solves sum_v P_v X = sum_v P_v c_v.
    """
    projectors = np.eye(3) - directions[..., :, None] * directions[..., None, :]  # (..., V, 3, 3)
    lhs = projectors.sum(axis=-3)
    rhs = np.einsum("...vij,vj->...i", projectors, origins)
    return np.linalg.solve(lhs, rhs[..., None])[..., 0]


def triangulation(split: Split, normalization: Normalization) -> np.ndarray:
    """Triangulate every frame of a split from its (denormalised) 2D detections, (N, J, 3) mm,
    root-relative. Each subject's own calibration is used."""
    predictions = np.empty(split.targets[:, 0].shape, dtype=np.float32)
    subjects = split.subjects
    for subject in np.unique(subjects):
        rows = np.flatnonzero(subjects == subject)
        cams = cameras.cameras_for(str(subject))
        pixels = normalization.invert(split.inputs[rows])  # (n, V, J, 2)
        directions = np.stack([cameras.pixels_to_rays(pixels[:, v], cam) for v, cam in enumerate(cams)], axis=2)
        origins = np.stack([cam.translation for cam in cams])  # (V, 3)
        points = triangulate_rays(origins, directions)  # (n, J, 3) world mm
        predictions[rows] = points - points[:, :1]
    return predictions


def evaluate_baselines(prepared) -> dict:
    """{name: Evaluation} of the baselines on the test split (the mean pose needs training frames)."""
    from iivformer.evaluate import evaluate_predictions

    results = {"triangulation": evaluate_predictions(triangulation(prepared.test, prepared.normalization), prepared.test)}
    if len(prepared.train):
        results["mean pose"] = evaluate_predictions(mean_pose(prepared.train, prepared.test), prepared.test)
    return results
