"""The user's own 2D keypoints: reading a keypoint file, COCO-17 to Human3.6M-17, missing joints.

A keypoint file holds the 2D joints of T frames seen by V calibrated cameras, in pixels:

- ``.npz``: ``keypoints`` (T, V, J, 2), or (T, V, J, 3) whose last channel is a confidence;
  optional ``scores`` (T, V, J) (a confidence, when the keypoints have none); optional
  ``camera_ids`` (V,) strings, the cameras of the view axis in order. Read with
  :func:`iivformer.npz.read_npz`: nothing in the file can run code.
- ``.json``: ``{"keypoints": nested lists (T, V, J, 2 or 3), "scores": ..., "camera_ids": [...]}``,
  at most :data:`MAX_JSON_BYTES`; ``null`` (or ``NaN``) marks a missing coordinate.

J is 17 in either joint order (:data:`FORMATS`): ``h36m17``, the model's own
(:data:`iivformer.skeleton.JOINT_NAMES`), or ``coco17`` (:data:`COCO17_NAMES`, what common 2D
detectors emit), converted by :func:`coco_to_h36m`.

Missing joints: a joint is missing where either coordinate is NaN, or where its confidence is at or
below ``min_score`` (default 0: only a confidence of 0, or below, marks a joint missing). A missing
joint's coordinates become NaN, so that nothing can use them by mistake; a joint derived from COCO
keypoints is missing when any of the keypoints it is made from is. What to do with missing joints
(leave the view out of that frame, or refuse) is decided by :mod:`iivformer.predict`, which knows
the model; nothing is ever averaged over the joints that are present.

Every problem with a file is one :class:`~iivformer.errors.DataError` line naming the file.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iivformer import skeleton
from iivformer.errors import DataError, one_line, printable
from iivformer.files import open_regular_file, read_limited
from iivformer.npz import read_npz

FORMATS = ("h36m17", "coco17")
COCO17_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
                "left_knee", "right_knee", "left_ankle", "right_ankle")
MAX_JSON_BYTES = 256 << 20  # a JSON keypoint file beyond this is refused: use .npz
MAX_PIXELS = 1e6  # a coordinate beyond a million pixels is not a pixel coordinate
MAX_CAMERA_ID = 100  # characters
MIN_EXTENT_PX = 4.0  # a person spanning fewer pixels than this in (the median) view: normalised coordinates?
_MEMBERS = ("keypoints", "scores", "camera_ids")


# ------------------------------------------------------------------------------ COCO-17 -> Human3.6M-17

def _coco_matrix() -> np.ndarray:
    """(17, 17) weights: Human3.6M joint j = sum_k M[j, k] * COCO keypoint k (see :func:`coco_to_h36m`)."""
    coco = {name: index for index, name in enumerate(COCO17_NAMES)}
    h36m = skeleton.JOINT_INDEX

    def mid(*names):
        weights = np.zeros(len(COCO17_NAMES))
        weights[[coco[name] for name in names]] = 1.0 / len(names)
        return weights

    def one(name):
        return mid(name)

    pelvis = mid("left_hip", "right_hip")
    thorax = mid("left_shoulder", "right_shoulder")
    head_centre = mid("left_ear", "right_ear")
    matrix = np.zeros((skeleton.NUM_JOINTS, len(COCO17_NAMES)))
    rows = {
        "Hip": pelvis,
        "RHip": one("right_hip"), "RKnee": one("right_knee"), "RFoot": one("right_ankle"),
        "LHip": one("left_hip"), "LKnee": one("left_knee"), "LFoot": one("left_ankle"),
        "Spine": pelvis + SPINE_FRACTION * (thorax - pelvis),
        "Thorax": thorax,
        "Nose": thorax + NOSE_FRACTION * (head_centre - thorax),
        "Head": head_centre + HEAD_EXTENSION * (head_centre - thorax),
        "LShoulder": one("left_shoulder"), "LElbow": one("left_elbow"), "LWrist": one("left_wrist"),
        "RShoulder": one("right_shoulder"), "RElbow": one("right_elbow"), "RWrist": one("right_wrist"),
    }
    for name, weights in rows.items():
        matrix[h36m[name]] = weights
    matrix[np.abs(matrix) < 1e-12] = 0.0
    return matrix


# Human3.6M's bones (subject means): pelvis to Spine 233 mm, Spine to Thorax 257 mm (so the Spine
# joint lies about half way, 0.48), Thorax to the neck/nose joint 115 mm, and on to the top of the
# head 115 mm. The ears are taken to lie half way between the neck/nose joint and the top of the
# head: 172 mm from the thorax, so the neck/nose joint is 2/3 of the way from the thorax to the
# ears and the top of the head 1/3 of that distance beyond the ears.
SPINE_FRACTION = 0.5
NOSE_FRACTION = 2.0 / 3.0
HEAD_EXTENSION = 1.0 / 3.0
COCO_TO_H36M = _coco_matrix()


def coco_to_h36m(points: np.ndarray, missing: np.ndarray = None) -> tuple:
    """Human3.6M-17 points (..., 17, 2) and their missing mask (..., 17) from COCO-17 keypoints
    (..., 17, 2) and theirs (default: where a coordinate is NaN).

    Each Human3.6M joint is a fixed linear combination of COCO keypoints (:data:`COCO_TO_H36M`),
    computed in each image on its own (a 2D projection of a 3D combination, as projection is
    nearly affine over a body):

    - Hip (the pelvis) = the middle of the COCO hips; RHip, RKnee, RFoot = right_hip, right_knee,
      right_ankle, and the same on the left; shoulders, elbows and wrists map directly;
    - Thorax = the middle of the shoulders;
    - Spine = half way from the pelvis to the thorax (:data:`SPINE_FRACTION`);
    - Nose (Human3.6M's neck/nose joint) = 2/3 of the way from the thorax to the middle of the ears
      (:data:`NOSE_FRACTION`), not the COCO nose, which lies some 10 cm in front of it;
    - Head (the top of the head) = the middle of the ears extended by 1/3 of the thorax-to-ears
      distance beyond them (:data:`HEAD_EXTENSION`), along the neck's direction in the image;
    - the COCO nose and eyes are not used.

    The approximations: a COCO hip or shoulder keypoint is where a detector sees the joint on the
    body's surface, not the motion-capture joint centre that Human3.6M's are; the middle of the
    shoulders sits a little below Human3.6M's thorax; the head joints assume an upright head of
    Human3.6M's mean proportions. A derived joint is missing when any COCO keypoint it is made
    from is (no joint is ever made from the keypoints that happen to be present).

    Measured cost (``benchmarks/coco_conversion.py``: synthetic people with modelled faces, exact
    projections, the 'small' set's S9 and S11, 30,461 frames x 4 views, the default-profile model):
    0.58 px mean over joints and views (Thorax 4.4 px, Nose and Head 2.0, Spine 1.1, Hip 0.3 from
    perspective, the directly mapped joints 0) and Protocol 1 of 25.54 mm from the true Human3.6M
    2D against 25.33 mm from the converted COCO 2D (-0.2 mm: no measurable cost at that model's
    error). The synthetic faces are modelled as this conversion assumes and a real detector's
    keypoints sit elsewhere on a real body, so these figures are a lower bound.
    """
    points = np.asarray(points, dtype=np.float64)
    missing = np.isnan(points).any(axis=-1) if missing is None else np.asarray(missing, dtype=bool)
    filled = np.where(missing[..., None], 0.0, points)
    converted = np.einsum("jk,...kc->...jc", COCO_TO_H36M, filled)
    converted_missing = np.einsum("jk,...k->...j", (COCO_TO_H36M != 0).astype(np.int64), missing.astype(np.int64)) > 0
    converted[converted_missing] = np.nan
    return converted, converted_missing


def coco_sources(joint: int) -> list:
    """Names of the COCO keypoints a Human3.6M joint is made from."""
    return [COCO17_NAMES[k] for k in np.flatnonzero(COCO_TO_H36M[joint])]


# ------------------------------------------------------------------------------ the keypoints

@dataclass
class Keypoints:
    """2D joints of T frames from V cameras, in the model's Human3.6M 17-joint order, pixels.

    points: (T, V, 17, 2) float64, NaN where missing; missing: (T, V, 17) bool; raw_missing:
    (T, V, 17) bool, the file's own joints (COCO ones for ``coco17``) that were missing;
    camera_ids: the cameras of the view axis (list of V strings) or None when the file names none;
    source: where they came from (for messages); format, min_score: how they were read; scored:
    whether a confidence came with the keypoints.
    """

    points: np.ndarray
    missing: np.ndarray
    raw_missing: np.ndarray
    camera_ids: list = None
    source: str = "keypoints"
    format: str = "h36m17"
    min_score: float = 0.0
    scored: bool = False  # whether the file gave a confidence per keypoint

    @property
    def frames(self) -> int:
        return self.points.shape[0]

    @property
    def views(self) -> int:
        return self.points.shape[1]

    def camera_name(self, view: int) -> str:
        """'camera 1' or 'camera 1 (54138969)' for messages."""
        if self.camera_ids is None:
            return f"camera {view}"
        return f"camera {view} ({printable(self.camera_ids[view])})"

    def joint_name(self, frame: int, view: int, joint: int) -> str:
        """The joint's name for messages; for COCO input with the missing COCO keypoints it comes from."""
        name = skeleton.JOINT_NAMES[joint]
        if self.format != "coco17":
            return name
        gone = [COCO17_NAMES[k] for k in np.flatnonzero(COCO_TO_H36M[joint]) if self.raw_missing[frame, view, k]]
        return f"{name} (COCO {', '.join(gone)} missing)"

    def where(self, frame: int, view: int, joint: int) -> str:
        """'frame 12, camera 1 (id), LWrist': a place in the file, frames and cameras counted from 0."""
        return f"frame {frame}, {self.camera_name(view)}, {self.joint_name(frame, view, joint)}"

    def first_missing(self, mask: np.ndarray = None) -> str:
        """Where the first missing joint is (within frames/views where `mask` (T, V) holds), or ''."""
        missing = self.missing if mask is None else self.missing & mask[..., None]
        found = np.argwhere(missing)
        return self.where(*found[0]) if len(found) else ""

    def missing_text(self) -> str:
        """'12 missing joints (NaN or score <= 0) in 3 of 100 frames and 2 of 4 cameras'."""
        count = int(self.missing.sum())
        frames = int(self.missing.any(axis=(1, 2)).sum())
        views = int(self.missing.any(axis=(0, 2)).sum())
        rule = f"NaN or score <= {self.min_score:g}" if self.scored else "NaN"
        if self.format == "coco17":
            rule += ", or made from a COCO keypoint that is"
        return (f"{count} missing joint{'s' * (count != 1)} ({rule}) in {frames} of {self.frames} frames and "
                f"{views} of {self.views} cameras")


def _where(source) -> str:
    return printable(source)


def _array(value, source, name: str) -> np.ndarray:
    """A numeric float64 array of `value` (NaN kept), or one DataError line."""
    if not isinstance(value, np.ndarray):
        raise DataError(f"{_where(source)}: '{name}' should be an array of numbers, found {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise DataError(f"{_where(source)}: '{name}' should hold numbers, found dtype {value.dtype}")
    array = value.astype(np.float64)
    if np.isinf(array).any():
        raise DataError(f"{_where(source)}: '{name}' holds {int(np.isinf(array).sum())} infinite values; mark a "
                        "missing joint with NaN (or a confidence of 0) instead")
    return array


def _camera_ids(value, views: int, source) -> list:
    if isinstance(value, np.ndarray) and value.dtype.kind in "US" and value.ndim == 1:
        ids = [item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item) for item in value.tolist()]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        ids = list(value)
    else:
        raise DataError(f"{_where(source)}: 'camera_ids' should be a list of {views} camera ids (strings)")
    if len(ids) != views:
        raise DataError(f"{_where(source)}: 'camera_ids' names {len(ids)} cameras but the keypoints have {views} views")
    if not all(0 < len(item) <= MAX_CAMERA_ID for item in ids):
        raise DataError(f"{_where(source)}: a camera id is empty or longer than {MAX_CAMERA_ID} characters")
    if len(set(ids)) != len(ids):
        raise DataError(f"{_where(source)}: 'camera_ids' repeat a camera ({', '.join(map(printable, ids))})")
    return ids


def keypoints_from_arrays(keypoints, scores=None, camera_ids=None, format: str = "h36m17", min_score: float = 0.0,
                          source="keypoints") -> Keypoints:
    """Check and convert keypoint arrays as read from a file (see the module docstring): `keypoints`
    (T, V, 17, 2 or 3) pixels, `scores` (T, V, 17), `camera_ids` (V,); `format` "h36m17" or "coco17";
    a joint at or below `min_score` confidence is missing."""
    if format not in FORMATS:
        raise DataError(f"{_where(source)}: unknown keypoint format {printable(format)!r}: choose one of "
                        f"{', '.join(FORMATS)}")
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not 0 <= min_score < float("inf"):
        raise DataError(f"min_score must be a number >= 0, not {min_score!r}")
    if isinstance(keypoints, (list, tuple)):
        try:
            keypoints = np.asarray(keypoints, dtype=np.float64)
        except (ValueError, TypeError):
            raise DataError(f"{_where(source)}: 'keypoints' is not a regular nested list of numbers") from None
    points = _array(keypoints, source, "keypoints")
    if points.ndim != 4 or points.shape[-1] not in (2, 3):
        raise DataError(f"{_where(source)}: 'keypoints' has shape {points.shape}; expected (frames, views, 17, 2) "
                        "pixels, or (frames, views, 17, 3) with a confidence")
    frames, views, joints, _ = points.shape
    if joints != skeleton.NUM_JOINTS:
        raise DataError(f"{_where(source)}: 'keypoints' has {joints} joints per view; expected 17 "
                        f"({' or '.join(FORMATS)} order)")
    if frames == 0 or views == 0:
        raise DataError(f"{_where(source)}: 'keypoints' holds no frames or no views (shape {points.shape})")
    if points.shape[-1] == 3:
        if scores is not None:
            raise DataError(f"{_where(source)}: a confidence both as the keypoints' third channel and as 'scores'; "
                            "give one of them")
        points, confidence = points[..., :2], points[..., 2]
    else:
        confidence = None if scores is None else _array(scores, source, "scores")
        if confidence is not None and confidence.shape != (frames, views, joints):
            raise DataError(f"{_where(source)}: 'scores' has shape {confidence.shape}; expected "
                            f"{(frames, views, joints)}, one per keypoint")
    huge = np.abs(np.nan_to_num(points)) > MAX_PIXELS
    if huge.any():
        raise DataError(f"{_where(source)}: {int(huge.sum())} coordinates beyond {MAX_PIXELS:.0e} pixels "
                        f"(up to {np.nanmax(np.abs(points)):.3g}); expected pixel coordinates")
    raw_missing = np.isnan(points).any(axis=-1)
    if confidence is not None:
        raw_missing |= ~(confidence > min_score)  # NaN confidence: missing too
    points = np.where(raw_missing[..., None], np.nan, points)
    if format == "coco17":
        converted, missing = coco_to_h36m(points, raw_missing)
    else:
        converted, missing = points, raw_missing.copy()
    ids = None if camera_ids is None else _camera_ids(camera_ids, views, source)
    present = ~missing
    if present.any():
        extent = np.nanmax(converted, axis=2) - np.nanmin(converted, axis=2)  # (T, V, 2), NaN where all missing
        with np.errstate(invalid="ignore"):
            span = np.nanmedian(np.nanmax(extent, axis=-1)) if np.isfinite(extent).any() else 0.0
        if span < MIN_EXTENT_PX:
            raise DataError(f"{_where(source)}: the people span {span:.3g} pixels (the median over frames and "
                            "views); expected pixel coordinates, not normalised ones")
    return Keypoints(converted, missing, raw_missing, ids, str(source), format, float(min_score),
                     scored=confidence is not None)


def read_keypoints(path, format: str = "h36m17", min_score: float = 0.0) -> Keypoints:
    """Read and check a keypoint file (``.npz`` or ``.json``, see the module docstring)."""
    path = Path(path)
    open_regular_file(path, DataError, "a keypoint file (.npz or .json)").close()
    if path.suffix.lower() == ".json":
        contents = _read_json(path)
    else:
        contents = read_npz(path, members=_MEMBERS)
        if "keypoints" not in contents:
            raise DataError(f"{_where(path)}: no 'keypoints' array; expected an .npz with keypoints "
                            "(frames, views, 17, 2) in pixels")
    return keypoints_from_arrays(contents["keypoints"], contents.get("scores"), contents.get("camera_ids"),
                                 format, min_score, path)


def _read_json(path: Path) -> dict:
    data = read_limited(path, MAX_JSON_BYTES, "a JSON keypoint file", "write large keypoint files as .npz", DataError)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{_where(path)}: not UTF-8 text; expected a JSON keypoint file") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{_where(path)}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise DataError(f"{_where(path)}: nested too deeply to be a keypoint file") from None
    if not isinstance(value, dict) or "keypoints" not in value:
        raise DataError(f"{_where(path)}: expected a JSON object {{\"keypoints\": [...], \"scores\": [...], "
                        "\"camera_ids\": [...]}}")
    unknown = sorted(set(value) - set(_MEMBERS))
    if unknown:
        raise DataError(f"{_where(path)}: unknown keys {', '.join(printable(k)[:40] for k in unknown[:5])}; "
                        f"expected {', '.join(_MEMBERS)}")
    contents = {"keypoints": _json_numbers(value["keypoints"], path, "keypoints", 4)}
    if value.get("scores") is not None:
        contents["scores"] = _json_numbers(value["scores"], path, "scores", 3)
    if value.get("camera_ids") is not None:
        contents["camera_ids"] = value["camera_ids"]
    return contents


def _json_numbers(value, path, name: str, rank: int) -> np.ndarray:
    """Nested lists of numbers (null: NaN) as a float64 array of `rank` dimensions, or one DataError line."""
    try:
        array = np.array(value, dtype=object)
    except (ValueError, RecursionError) as error:
        raise DataError(f"{_where(path)}: '{name}' is not a regular nested list ({one_line(error)[:80]})") from None
    if array.ndim != rank:
        raise DataError(f"{_where(path)}: '{name}' should be nested lists {rank} deep with equal lengths, found "
                        f"{array.ndim} regular levels (shape {array.shape})")
    flat = array.ravel()
    bad = [item for item in flat if item is not None and (isinstance(item, bool) or not isinstance(item, (int, float)))]
    if bad:
        raise DataError(f"{_where(path)}: '{name}' holds {len(bad)} values that are not numbers (the first: "
                        f"{printable(repr(bad[0]))[:40]}); mark a missing joint with null")
    try:
        return np.array([np.nan if item is None else item for item in flat], dtype=np.float64).reshape(array.shape)
    except OverflowError:
        raise DataError(f"{_where(path)}: '{name}' holds a number too large for a pixel coordinate") from None
