"""The synthetic 2D detections: exact projections of the 17 joints plus a detector-like error.

The error has jitter, a slow drift, short left/right swaps and outliers, larger at the wrists and
ankles (and elbows) as with a real 2D detector; each recording's detections come from its own seeded
generator, and each camera's may run up to 5 frames past the 3D recording, as in the real archives.
"""
import numpy as np
from tqdm.auto import tqdm

from iivformer import cameras, skeleton
from iivformer.errors import IIVFormerError
from iivformer.synthetic.seeds import check_seed, tag

DEFAULT_DETECTOR_NOISE = 3.0  # px, standard deviation per coordinate (x2 at wrists and ankles)

_JOINT = skeleton.JOINT_INDEX
_WRISTS_AND_ANKLES = [_JOINT[name] for name in ("RFoot", "LFoot", "LWrist", "RWrist")]
_ELBOWS = [_JOINT[name] for name in ("LElbow", "RElbow")]


MAX_DETECTOR_NOISE = 200.0  # px: a fifth of an image; beyond it the 2D carries no pose


def check_detector_noise(detector_noise) -> None:
    """Raise IIVFormerError unless detector_noise (pixels) is in 0..MAX_DETECTOR_NOISE."""
    if isinstance(detector_noise, bool) or not isinstance(detector_noise, (int, float, np.integer, np.floating)) \
            or not 0 <= detector_noise <= MAX_DETECTOR_NOISE:
        raise IIVFormerError(f"detector_noise must be between 0 and {MAX_DETECTOR_NOISE:g} pixels, got {detector_noise!r}")


def detector_error(uv, rng, sigma, cam):
    """Detector-like error on (F, 17, 2) pixels: jitter, slow drift, left/right swaps and outliers."""
    frames = len(uv)
    scale = np.ones((skeleton.NUM_JOINTS, 1))
    scale[_WRISTS_AND_ANKLES] = 2.0
    scale[_ELBOWS] = 1.4
    window = 9
    slow = np.cumsum(rng.standard_normal((frames + window, skeleton.NUM_JOINTS, 2)), axis=0)
    slow = (slow[window:] - slow[:-window]) / np.sqrt(window)
    uv = uv + sigma * scale * (0.6 * rng.standard_normal(uv.shape) + 0.8 * slow)
    starts, lasting = rng.random(frames) < 0.0012, rng.integers(1, 5, frames)  # ~0.3% of frames
    swapped = starts.copy()
    for k in range(1, 4):  # bursts of 1-4 frames
        swapped[k:] |= starts[:-k] & (lasting[:-k] > k)
    left, right = np.array(skeleton.LEFT_JOINTS), np.array(skeleton.RIGHT_JOINTS)
    pairs = [slice(0, 6), slice(0, 3), slice(3, 6)][rng.integers(0, 3)]  # all pairs, the legs or the arms
    a, b = left[pairs], right[pairs]
    uv[np.ix_(swapped, np.concatenate([a, b]))] = uv[np.ix_(swapped, np.concatenate([b, a]))]
    outliers = rng.random((frames, skeleton.NUM_JOINTS)) < 0.007
    angle = rng.uniform(0, 2 * np.pi, outliers.sum())
    uv[outliers] += rng.uniform(20, 60, outliers.sum())[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    return np.clip(uv, 0, [cam.res_w - 1, cam.res_h - 1])


def make_detections(positions_3d: dict, seed: int, detector_noise: float = DEFAULT_DETECTOR_NOISE,
                    progress: bool = False, rig=None) -> dict:
    """positions_2d: subject -> recording -> float32 (frames + 0..5, 17, 2) pixel arrays, one per camera
    of the subject (Human3.6M's 4) or of the `rig`, from (frames, 32 or 17, 3) metres."""
    check_seed(seed)
    check_detector_noise(detector_noise)
    detections = {}
    items = [(subject, name) for subject in positions_3d for name in positions_3d[subject]]
    for subject, name in tqdm(items, desc="2D detections", unit="recording", disable=not progress):
        rng = np.random.default_rng([seed, tag("detections", subject, name)])
        positions = np.asarray(positions_3d[subject][name], dtype=np.float64)
        if positions.shape[-2] != skeleton.NUM_JOINTS:  # 32 motion-capture joints; 17 are used as they are
            positions = skeleton.to_17_joints(positions)
        joints = positions * 1000.0
        views = []
        for cam in cameras.cameras_for(subject, rig):
            uv = cameras.project(joints, cam)
            uv = np.concatenate([uv, np.repeat(uv[-1:], rng.integers(0, 6), axis=0)])
            if detector_noise > 0:
                uv = detector_error(uv, rng, detector_noise, cam)
            views.append(uv.astype(np.float32))
        detections.setdefault(subject, {})[name] = views
    return detections
