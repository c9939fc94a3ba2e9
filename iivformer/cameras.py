"""Human3.6M cameras: calibration, quaternions, world <-> camera, projection with distortion.

Conventions (``resources/h36m_cameras.json``): the quaternion [w, x, y, z] gives the
camera-to-world rotation R, a world point X (millimetres) has camera coordinates R^T (X - t),
and the image point follows the Human3.6M (VideoPose3D ``project_to_2d``) distortion model, or
OpenCV's for cameras imported from an OpenCV-style calibration (``distortion_model="opencv"``).
Every function here works on numpy arrays with any leading batch shape. Other rigs than
Human3.6M's are described in :mod:`iivformer.rig`.
"""
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from iivformer.errors import IIVFormerError


@dataclass(frozen=True)
class Camera:
    """One calibrated camera of one subject. Lengths in millimetres, image quantities in pixels."""

    id: str
    orientation: np.ndarray  # (4,) unit quaternion [w, x, y, z], camera-to-world
    translation: np.ndarray  # (3,) camera centre in world coordinates, mm
    focal_length: np.ndarray  # (2,) fx, fy
    center: np.ndarray  # (2,) cx, cy
    radial_distortion: np.ndarray  # (3,) k1, k2, k3
    tangential_distortion: np.ndarray  # (2,) p1, p2
    res_w: int
    res_h: int
    distortion_model: str = "h36m"  # or "opencv" (see distort)

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation matrix (3, 3)."""
        return quaternion_to_matrix(self.orientation)


@lru_cache(maxsize=None)
def _calibration() -> dict:
    with resources.files("iivformer").joinpath("resources/h36m_cameras.json").open() as handle:
        return json.load(handle)


def cameras_for(subject: str, rig=None) -> list:
    """The cameras of a subject, in the order of the 2D arrays in the archives: the `rig`'s when one
    is given (an :class:`iivformer.rig.Rig`, the same for every subject), else the subject's 4
    Human3.6M cameras."""
    if rig is not None:
        return list(rig.cameras)
    calibration = _calibration()
    if subject not in calibration["extrinsics"]:
        known = ", ".join(calibration["extrinsics"])
        raise IIVFormerError(f"no camera calibration for subject {subject!r} (known: {known})")
    cameras = []
    for intrinsic, extrinsic in zip(calibration["intrinsics"], calibration["extrinsics"][subject]):
        cameras.append(Camera(
            id=intrinsic["id"],
            orientation=np.asarray(extrinsic["orientation"], dtype=np.float64),
            translation=np.asarray(extrinsic["translation"], dtype=np.float64),
            focal_length=np.asarray(intrinsic["focal_length"], dtype=np.float64),
            center=np.asarray(intrinsic["center"], dtype=np.float64),
            radial_distortion=np.asarray(intrinsic["radial_distortion"], dtype=np.float64),
            tangential_distortion=np.asarray(intrinsic["tangential_distortion"], dtype=np.float64),
            res_w=int(intrinsic["res_w"]),
            res_h=int(intrinsic["res_h"]),
        ))
    return cameras


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) of unit quaternions (..., 4) given as [w, x, y, z]."""
    q = np.asarray(quaternion, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=-2)


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """Unit quaternion [w, x, y, z] (w >= 0) of a rotation matrix (3, 3); the inverse of
    :func:`quaternion_to_matrix`."""
    m = np.asarray(matrix, dtype=np.float64)
    candidates = np.array([  # 4 q_i^2 for w, x, y, z; the largest is computed from the diagonal
        1 + m[0, 0] + m[1, 1] + m[2, 2], 1 + m[0, 0] - m[1, 1] - m[2, 2],
        1 - m[0, 0] + m[1, 1] - m[2, 2], 1 - m[0, 0] - m[1, 1] + m[2, 2]])
    largest = int(np.argmax(candidates))
    s = 2 * np.sqrt(candidates[largest])  # 4 q_largest
    if largest == 0:
        q = [s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif largest == 1:
        q = [(m[2, 1] - m[1, 2]) / s, s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif largest == 2:
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s]
    else:
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4]
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def world_to_camera(points_world: np.ndarray, camera: Camera) -> np.ndarray:
    """Camera coordinates (..., 3) of world points (..., 3), both in millimetres."""
    return (np.asarray(points_world, dtype=np.float64) - camera.translation) @ camera.rotation


def distort(normalized: np.ndarray, camera: Camera) -> np.ndarray:
    """Apply the camera's lens model to ideal normalised image points (..., 2) = (X/Z, Y/Z): the
    Human3.6M one (VideoPose3D), or OpenCV's when ``camera.distortion_model == "opencv"``."""
    x, y = normalized[..., 0], normalized[..., 1]
    k1, k2, k3 = camera.radial_distortion
    p1, p2 = camera.tangential_distortion
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    if camera.distortion_model == "opencv":
        return np.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                         y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], axis=-1)
    tangential = p1 * x + p2 * y
    return np.stack([x * (radial + tangential) + p1 * r2, y * (radial + tangential) + p2 * r2], axis=-1)


def undistort(distorted: np.ndarray, camera: Camera, iterations: int = 20) -> np.ndarray:
    """Invert :func:`distort` by fixed-point iteration: ideal normalised points (..., 2)."""
    distorted = np.asarray(distorted, dtype=np.float64)
    estimate = distorted.copy()
    for _ in range(iterations):
        estimate = estimate + (distorted - distort(estimate, camera))
    return estimate


def project(points_world: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixel coordinates (..., 2) of world points (..., 3) in millimetres, with lens distortion."""
    points_camera = world_to_camera(points_world, camera)
    normalized = points_camera[..., :2] / points_camera[..., 2:3]
    return distort(normalized, camera) * camera.focal_length + camera.center


def camera_ids(rig=None) -> list:
    """The camera ids of a rig (default: Human3.6M's), in the order of the views in the archives."""
    if rig is not None:
        return list(rig.ids)
    return [intrinsic["id"] for intrinsic in _calibration()["intrinsics"]]


def parse_views(text: str, rig=None) -> list:
    """Views from the command line: camera indices ('0,1,3') or camera ids ('54138969,60457274')
    of the rig (default: Human3.6M's), as sorted indices; one IIVFormerError line for anything else."""
    ids = camera_ids(rig)
    views = []
    for part in (p.strip() for p in str(text).split(",")):
        if part in ids:
            views.append(ids.index(part))
        elif part.isdigit() and int(part) < len(ids):
            views.append(int(part))
        else:
            raise IIVFormerError(f"--views: {part!r} is neither a camera index 0..{len(ids) - 1} nor a camera id "
                                 f"({', '.join(ids)})")
    if len(set(views)) != len(views):
        raise IIVFormerError(f"--views: {text!r} names a camera twice")
    return sorted(views)
