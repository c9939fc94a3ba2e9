"""How the 2D inputs limit the 3D: a detector-noise sweep and per-camera forensics.

- :func:`exact_projections`: the ground truth projected into every camera (what a perfect 2D
  detector would give), aligned with the samples of a split.
- :func:`noise_sweep`: the model and triangulation on the test frames with detector-like noise of
  several sizes (the synthetic generator's error model: jitter, drift, left/right swaps and
  outliers) added to the exact projections (synthetic data) or to the archive's own 2D (real data).
- :func:`camera_forensics`: for each camera, its 2D replaced by the exact projection, and how many
  mm that camera's detector costs; with the 2D error of the inputs per camera and joint, in pixels.
Results are {"p1": mm, "p2": mm} per method, the means over actions of the tables.
"""
import numpy as np

from iivformer import cameras, runtime
from iivformer.baselines import triangulation
from iivformer.evaluate import evaluate_predictions, predict
from iivformer.prepare import Normalization, Split
from iivformer.synthetic.detector import detector_error
from iivformer.synthetic.seeds import tag

NOISE_LEVELS = (0.0, 2.0, 5.0, 10.0, 20.0)  # px
_PIXELS = Normalization(np.zeros((1, 1, 2), np.float32), np.ones((1, 1, 2), np.float32))


def exact_projections(archives, split: Split, views) -> np.ndarray:
    """(N, V, J, 2) pixels: every sample's true 3D joints projected into the cameras `views` (of the
    archives' rig, or each subject's Human3.6M cameras)."""
    pixels = np.empty(split.inputs.shape, dtype=np.float32)
    for index, (subject, recording) in enumerate(split.sources):
        rows = np.flatnonzero(split.source_index == index)
        world_mm = archives.positions_3d[subject][recording][split.frame_index[rows]] * 1000.0
        for axis, view in enumerate(views):
            pixels[rows, axis] = cameras.project(world_mm, cameras.cameras_for(subject, archives.rig)[view])
    return pixels


def with_detector_noise(pixels: np.ndarray, split: Split, views, sigma: float, seed: int = 0,
                        rig=None) -> np.ndarray:
    """`pixels` (N, V, J, 2) with the detector error model of size `sigma` px added, recording by
    recording and camera by camera (each from its own seeded generator; cameras of the `rig`, or
    each subject's Human3.6M ones)."""
    noisy = pixels.copy()
    if sigma == 0:
        return noisy
    for index, (subject, recording) in enumerate(split.sources):
        rows = np.flatnonzero(split.source_index == index)
        for axis, view in enumerate(views):
            rng = np.random.default_rng([seed, tag("sweep", subject, recording, view, sigma)])
            camera = cameras.cameras_for(subject, rig)[view]
            noisy[rows, axis] = detector_error(pixels[rows, axis].astype(np.float64), rng, sigma, camera)
    return noisy


def _means(evaluation) -> dict:
    return {protocol: evaluation.per_action(protocol)["mean"] for protocol in ("p1", "p2")}


def evaluate_pixels(model, prepared, pixels: np.ndarray, device="auto") -> dict:
    """{"model": {"p1", "p2"}, "triangulation": {...}} on the frames of prepared.test given their 2D
    `pixels` (N, V, J, 2) in the cameras prepared.views."""
    split, normalization, device = prepared.test, prepared.normalization, runtime.resolve_device(device)
    inputs = ((pixels - normalization.mean) / normalization.std).astype(np.float32)
    pixel_split = Split(pixels, split.targets, split.sources, split.source_index, split.frame_index)
    return {"model": _means(evaluate_predictions(predict(model, inputs, device), split)),
            "triangulation": _means(evaluate_predictions(
                triangulation(pixel_split, _PIXELS, axis_views=prepared.views, rig=prepared.rig), split))}


def noise_sweep(model, prepared, levels=NOISE_LEVELS, base: str = "exact", device="auto") -> dict:
    """{noise px: evaluate_pixels(...)} on prepared.test (prepared with its archives kept), the noise
    added to the exact projections (`base` "exact") or to the archive's own 2D ("archive")."""
    test, views = prepared.test, prepared.views
    start = (exact_projections(prepared.archives, test, views) if base == "exact"
             else prepared.normalization.invert(test.inputs))
    return {float(sigma): evaluate_pixels(model, prepared, with_detector_noise(start, test, views, sigma,
                                                                               rig=prepared.rig), device)
            for sigma in levels}


def camera_forensics(model, prepared, device="auto") -> dict:
    """{"inputs": results on the archive's 2D, "cameras": {camera id: {"model": {"p1", "p2"},
    "triangulation": {...}, "pixel_error": mean px}}, "pixel_error_per_joint": [[px per joint] per camera]}:
    each camera's 2D in turn replaced by the exact projection of the ground truth."""
    test, views = prepared.test, prepared.views
    detected = prepared.normalization.invert(test.inputs)
    exact = exact_projections(prepared.archives, test, views)
    error_px = np.linalg.norm(detected - exact, axis=-1)  # (N, V, J)
    ids = cameras.camera_ids(prepared.rig)
    result = {"inputs": evaluate_pixels(model, prepared, detected, device), "cameras": {},
              "pixel_error_per_joint": error_px.mean(axis=0).tolist()}
    for axis, view in enumerate(views):
        repaired = detected.copy()
        repaired[:, axis] = exact[:, axis]
        entry = evaluate_pixels(model, prepared, repaired, device)
        entry["pixel_error"] = float(error_px[:, axis].mean())
        result["cameras"][ids[view]] = entry
    return result


