"""Camera rigs: the calibrated cameras of a capture, built in (Human3.6M) or from a file.

A rig file is JSON in the conventions of Human3.6M's calibration (``resources/h36m_cameras.json``)::

    {"name": "my-lab",
     "cameras": [{"id": "left", "resolution": [w, h], "focal_length": [fx, fy], "center": [cx, cy],
                  "radial_distortion": [k1, k2, k3], "tangential_distortion": [p1, p2],
                  "orientation": [w, x, y, z], "translation": [x, y, z]}, ...]}

- ``orientation``: unit quaternion of the camera-to-world rotation R (a world point X has camera
  coordinates R^T (X - translation); the camera looks along its +Z, image x right, y down);
- ``translation``: the camera centre in world millimetres; the world's Z axis points up and the
  floor is Z = 0;
- ``distortion_model`` (optional): ``"h36m"`` (the default: VideoPose3D's ``project_to_2d``) or
  ``"opencv"`` (OpenCV's tangential terms; what :func:`from_anipose` writes).

The camera order is the order of the views in the 2D archives. ``h36m:S9`` names the built-in rig
of a Human3.6M subject. :func:`from_anipose` imports an anipose/aniposelib ``calibration.toml``.
Every rig is checked when it is read: unit quaternions, positive focal lengths, millimetres, and
every camera seeing the capture volume (a person standing where the cameras' optical axes meet);
a bad rig gets one :class:`~iivformer.errors.DataError` line naming the file and the camera.
"""
import json
import tomllib
from dataclasses import dataclass

import numpy as np

from iivformer import cameras
from iivformer.errors import DataError, printable
from iivformer.files import read_limited, write_json

RIG_KEY = "rig"  # in a 2D archive's metadata: the rig the 2D was projected through (absent: Human3.6M)
BUILT_IN_PREFIX = "h36m:"
MAX_RIG_BYTES = 1 << 20
MAX_CAMERAS = 64
MIN_DISTANCE_MM, MAX_DISTANCE_MM = 300.0, 100_000.0  # camera to capture volume: a room, in millimetres
PERSON_BOX_MM = np.array([[x, y, z] for x in (-300, 300) for y in (-300, 300) for z in (0, 1800)], float)
CENTRE_HEIGHT_MM = 1000.0  # an imported rig's axes meet this far above its floor


@dataclass(frozen=True)
class Rig:
    """A named, ordered list of :class:`~iivformer.cameras.Camera` (millimetres, world Z up)."""

    name: str
    cameras: tuple

    @property
    def ids(self) -> list:
        return [camera.id for camera in self.cameras]

    def __len__(self) -> int:
        return len(self.cameras)

    def to_dict(self) -> dict:
        """The rig in the file format (plain lists and numbers)."""
        return {"name": self.name, "cameras": [_camera_dict(camera) for camera in self.cameras]}

    def capture_centre(self) -> np.ndarray:
        """World point (mm) closest to every camera's optical axis, in the least-squares sense."""
        return _axes_meet(self.cameras)

    def floor_centre(self) -> np.ndarray:
        """The floor point (mm, Z = 0) below the capture centre: where a person stands to be seen."""
        centre = self.capture_centre()
        return np.array([centre[0], centre[1], 0.0])

    def describe(self) -> str:
        """One line per camera: id, resolution, focal length, position and distance to the capture centre."""
        centre = self.capture_centre()
        lines = [f"rig {printable(self.name)}: {len(self)} cameras; their axes meet at "
                 f"({centre[0] / 1000:.2f}, {centre[1] / 1000:.2f}, {centre[2] / 1000:.2f}) m"]
        for camera in self.cameras:
            x, y, z = camera.translation / 1000
            lines.append(f"  {printable(camera.id):>12}: {camera.res_w}x{camera.res_h} px, f {camera.focal_length[0]:.0f} px, "
                         f"at ({x:.2f}, {y:.2f}, {z:.2f}) m, {np.linalg.norm(camera.translation - centre) / 1000:.2f} m "
                         f"from the centre, {camera.distortion_model} lens model")
        return "\n".join(lines)


def _camera_dict(camera: cameras.Camera) -> dict:
    entry = {"id": camera.id, "resolution": [camera.res_w, camera.res_h],
             "focal_length": camera.focal_length.tolist(), "center": camera.center.tolist(),
             "radial_distortion": camera.radial_distortion.tolist(),
             "tangential_distortion": camera.tangential_distortion.tolist(),
             "orientation": camera.orientation.tolist(), "translation": camera.translation.tolist()}
    if camera.distortion_model != "h36m":
        entry["distortion_model"] = camera.distortion_model
    return entry


def _axes_meet(cams) -> np.ndarray:
    normal, right = np.zeros((3, 3)), np.zeros(3)
    for camera in cams:
        axis = camera.rotation[:, 2]
        projector = np.eye(3) - np.outer(axis, axis)
        normal += projector
        right += projector @ camera.translation
    return np.linalg.lstsq(normal, right, rcond=None)[0]


def camera_looking_at(camera_id: str, position, target, resolution=(1280, 720), focal_length=1000.0,
                      radial_distortion=(0.0, 0.0, 0.0), tangential_distortion=(0.0, 0.0)) -> dict:
    """A camera entry of the rig file format for a camera at `position` (mm) looking at `target` (mm),
    upright (its image x axis horizontal); a quick way to lay out a rig before it is calibrated."""
    forward = np.asarray(target, dtype=np.float64) - np.asarray(position, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:
        raise DataError(f"camera {printable(camera_id)!r}: looks straight up or down; give it a tilt")
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward], axis=1)  # columns: image x, image y, view
    width, height = resolution
    return {"id": camera_id, "resolution": [int(width), int(height)], "focal_length": [float(focal_length)] * 2,
            "center": [width / 2, height / 2], "radial_distortion": list(map(float, radial_distortion)),
            "tangential_distortion": list(map(float, tangential_distortion)),
            "orientation": cameras.matrix_to_quaternion(rotation).tolist(),
            "translation": np.asarray(position, dtype=np.float64).tolist()}


# ------------------------------------------------------------------------------ reading and checking

def h36m_rig(subject: str) -> Rig:
    """The built-in rig of a Human3.6M subject (its 4 cameras)."""
    return Rig(BUILT_IN_PREFIX + subject, tuple(cameras.cameras_for(subject)))


def load_rig(spec) -> Rig:
    """A rig from ``h36m:<subject>``, a rig JSON file, or an anipose ``calibration.toml``; checked."""
    text = str(spec)
    if text.startswith(BUILT_IN_PREFIX):
        try:
            return h36m_rig(text[len(BUILT_IN_PREFIX):])
        except Exception as error:
            raise DataError(f"--rig {printable(text)}: {error}") from None
    if text.lower().endswith(".toml"):
        return from_anipose(text)
    return rig_from_dict(_read_json(text), text)


def _read_text(path, expected: str) -> str:
    data = read_limited(path, MAX_RIG_BYTES, expected, error=DataError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; expected {expected}") from None


def _read_json(path):
    try:
        return json.loads(_read_text(path, "a rig JSON file"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None


def rig_from_dict(data, source="rig") -> Rig:
    """Check a rig in the file format and build it; one DataError line naming `source` and the camera."""
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise DataError(f"{source}: expected {{\"name\": ..., \"cameras\": [...]}} (see iivformer.rig)")
    name = data.get("name", "rig")
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise DataError(f"{source}: 'name' should be a short text")
    if not 2 <= len(data["cameras"]) <= MAX_CAMERAS:
        raise DataError(f"{source}: a rig has 2 to {MAX_CAMERAS} cameras, this one {len(data['cameras'])}")
    built = tuple(_camera_from_dict(entry, source, index) for index, entry in enumerate(data["cameras"]))
    ids = [camera.id for camera in built]
    if len(set(ids)) != len(ids):
        raise DataError(f"{source}: camera ids repeat ({', '.join(map(printable, ids))})")
    rig = Rig(name, built)
    check_rig(rig, source)
    return rig


def _numbers(entry: dict, key: str, count: int, where: str) -> np.ndarray:
    value = entry.get(key)
    if (not isinstance(value, list) or len(value) != count
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise DataError(f"{where}: '{key}' should be a list of {count} numbers")
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all() or np.abs(array).max() > 1e9:
        raise DataError(f"{where}: '{key}' holds a non-finite or huge number")
    return array


def _camera_from_dict(entry, source, index: int) -> cameras.Camera:
    if not isinstance(entry, dict):
        raise DataError(f"{source}: camera {index} should be a dictionary")
    camera_id = entry.get("id")
    if not isinstance(camera_id, str) or not 0 < len(camera_id) <= 100:
        raise DataError(f"{source}: camera {index} needs an 'id' (a short text)")
    where = f"{source}: camera {printable(camera_id)!r}"
    resolution = _numbers(entry, "resolution", 2, where)
    if not all(0 < r <= 100_000 and r == int(r) for r in resolution):
        raise DataError(f"{where}: 'resolution' should be two positive whole numbers of pixels")
    focal = _numbers(entry, "focal_length", 2, where)
    if not (focal > 0).all():
        raise DataError(f"{where}: focal length {focal.tolist()} px must be positive")
    orientation = _numbers(entry, "orientation", 4, where)
    norm = float(np.linalg.norm(orientation))
    if abs(norm - 1) > 1e-3:
        raise DataError(f"{where}: 'orientation' is not a rotation (quaternion of norm {norm:.4g}, not 1); "
                        "give the camera-to-world rotation as a unit quaternion [w, x, y, z]")
    model = entry.get("distortion_model", "h36m")
    if model not in ("h36m", "opencv"):
        raise DataError(f"{where}: distortion_model {printable(model)!r} is neither 'h36m' nor 'opencv'")
    return cameras.Camera(
        id=camera_id, orientation=orientation / norm, translation=_numbers(entry, "translation", 3, where),
        focal_length=focal, center=_numbers(entry, "center", 2, where),
        radial_distortion=_numbers(entry, "radial_distortion", 3, where),
        tangential_distortion=_numbers(entry, "tangential_distortion", 2, where),
        res_w=int(resolution[0]), res_h=int(resolution[1]), distortion_model=model)


def check_rig(rig: Rig, source="rig") -> None:
    """Millimetres, axes that meet, and every camera seeing a person standing where they meet."""
    normal = sum(np.eye(3) - np.outer(c.rotation[:, 2], c.rotation[:, 2]) for c in rig.cameras)
    if np.linalg.matrix_rank(normal, tol=1e-6) < 3:
        raise DataError(f"{source}: the cameras' optical axes are parallel; they do not look at one place")
    centre = rig.capture_centre()
    distances = {camera.id: float(np.linalg.norm(camera.translation - centre)) for camera in rig.cameras}
    nearest, farthest = min(distances, key=distances.get), max(distances, key=distances.get)
    if distances[farthest] < MIN_DISTANCE_MM:
        raise DataError(f"{source}: camera {printable(farthest)!r} is {distances[farthest]:.3g} mm from where the "
                        "cameras look; translations are in millimetres (these look like metres)")
    if distances[nearest] > MAX_DISTANCE_MM:
        raise DataError(f"{source}: camera {printable(nearest)!r} is {distances[nearest] / 1000:.3g} m from where the "
                        "cameras look; translations are in millimetres (are these micrometres?)")
    person = PERSON_BOX_MM + np.array([centre[0], centre[1], 0.0])
    for camera in rig.cameras:
        depth = cameras.world_to_camera(person, camera)[:, 2]
        if (depth <= 0).any():
            raise DataError(f"{source}: camera {printable(camera.id)!r} does not see the capture volume "
                            "(a person standing where the cameras look is behind it)")
        uv = cameras.project(person, camera)
        if ((uv < 0) | (uv > [camera.res_w, camera.res_h])).any():
            raise DataError(f"{source}: camera {printable(camera.id)!r} does not see the capture volume "
                            f"(a person standing at ({centre[0] / 1000:.2f}, {centre[1] / 1000:.2f}) m, where the "
                            "cameras look, is partly outside its image)")


def save_rig(rig: Rig, path) -> None:
    """Write the rig in the file format (atomically)."""
    write_json(path, rig.to_dict())


def rig_of_metadata(metadata: dict, source="2D archive"):
    """The rig a 2D archive's metadata names (checked), or None for Human3.6M's per-subject cameras."""
    stored = (metadata or {}).get(RIG_KEY)
    return None if stored is None else rig_from_dict(stored, f"{source} (its rig)")


# ------------------------------------------------------------------------------ anipose import

def _rodrigues(vector: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (OpenCV's Rodrigues)."""
    angle = float(np.linalg.norm(vector))
    if angle < 1e-12:
        return np.eye(3)
    k = vector / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _rotation_to_z(up: np.ndarray) -> np.ndarray:
    """The smallest rotation taking the unit vector `up` to +Z."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(up, z)
    sine, cosine = np.linalg.norm(axis), float(up @ z)
    if sine < 1e-12:
        return np.eye(3) if cosine > 0 else np.diag([1.0, -1.0, -1.0])
    return _rodrigues(axis / sine * np.arctan2(sine, cosine))


UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}
UP_AXES = {"+x": [1, 0, 0], "-x": [-1, 0, 0], "+y": [0, 1, 0], "-y": [0, -1, 0], "+z": [0, 0, 1], "-z": [0, 0, -1]}


def _anipose_camera(entry, where: str) -> tuple:
    """(id, world-to-camera rotation R, translation t (x_camera = R X + t, calibration units),
    intrinsics) of one anipose [cam_N] table."""
    if entry.get("fisheye"):
        raise DataError(f"{where}: fisheye cameras are not supported")
    matrix = np.asarray(entry.get("matrix", []), dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise DataError(f"{where}: 'matrix' should be a 3x3 camera matrix")
    if abs(matrix[0, 1]) > 1e-9 or np.abs(matrix[2] - [0, 0, 1]).max() > 1e-9:
        raise DataError(f"{where}: 'matrix' should be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
    distortions = list(np.ravel(entry.get("distortions", [])).astype(np.float64))
    if len(distortions) > 5:
        raise DataError(f"{where}: {len(distortions)} distortion coefficients; only k1 k2 p1 p2 k3 are supported")
    k1, k2, p1, p2, k3 = distortions + [0.0] * (5 - len(distortions))
    rotation = np.asarray(entry.get("rotation", []), dtype=np.float64)
    translation = np.asarray(entry.get("translation", []), dtype=np.float64)
    size = entry.get("size", [])
    if rotation.shape != (3,) or translation.shape != (3,) or len(size) != 2:
        raise DataError(f"{where}: needs 'size' [w, h], 'rotation' (3, Rodrigues) and 'translation' (3)")
    intrinsics = {"resolution": [int(size[0]), int(size[1])], "focal_length": [matrix[0, 0], matrix[1, 1]],
                  "center": [matrix[0, 2], matrix[1, 2]], "radial_distortion": [k1, k2, k3],
                  "tangential_distortion": [p1, p2], "distortion_model": "opencv"}
    return str(entry.get("name", where)), _rodrigues(rotation), translation, intrinsics


def from_anipose(path, units: str = "mm", up: str = "auto", name: str = None) -> Rig:
    """Import an anipose / aniposelib ``calibration.toml`` ([cam_0], [cam_1], ...: name, size, matrix,
    distortions k1 k2 p1 p2 k3, rotation as a Rodrigues vector and translation, world to camera).

    `units`: the calibration's length unit (that of its board squares; default mm). The world is
    turned so that `up` (``auto``: the cameras' mean image-up direction, or an axis such as ``-y``)
    is +Z, and moved so that the cameras' axes meet at (0, 0, 1 m): the floor is assumed 1 m below.
    Each converted camera is checked by reprojecting points both ways (OpenCV's convention and this
    project's) before the rig is returned."""
    if units not in UNITS_MM:
        raise DataError(f"{path}: units {units!r} should be one of {', '.join(UNITS_MM)}")
    if up != "auto" and up not in UP_AXES:
        raise DataError(f"{path}: up {up!r} should be 'auto' or one of {', '.join(UP_AXES)}")
    try:
        tables = tomllib.loads(_read_text(path, "an anipose calibration.toml"))
    except tomllib.TOMLDecodeError as error:
        raise DataError(f"{path}: not valid TOML ({printable(error)})") from None
    keys = sorted((key for key in tables if key.startswith("cam_") and key[4:].isdigit()), key=lambda k: int(k[4:]))
    if not keys:
        raise DataError(f"{path}: no [cam_0], [cam_1], ... tables; is this an anipose calibration.toml?")
    try:
        found = [_anipose_camera(tables[key], f"{path}: [{key}]") for key in keys]
    except (TypeError, ValueError):
        raise DataError(f"{path}: a camera table holds something other than numbers where numbers belong") from None
    upward = (np.mean([-rotation[1] for _, rotation, _, _ in found], axis=0) if up == "auto"
              else np.asarray(UP_AXES[up], dtype=np.float64))
    turn = _rotation_to_z(upward / np.linalg.norm(upward))
    entries = [{"id": camera_id, "orientation": cameras.matrix_to_quaternion(turn @ rotation.T).tolist(),
                "translation": (turn @ (-rotation.T @ translation) * UNITS_MM[units]).tolist(), **intrinsics}
               for camera_id, rotation, translation, intrinsics in found]
    rig = Rig(name or str(path), tuple(_camera_from_dict(entry, path, index) for index, entry in enumerate(entries)))
    shift = np.array([0.0, 0.0, CENTRE_HEIGHT_MM]) - rig.capture_centre()
    for entry in entries:
        entry["translation"] = (np.asarray(entry["translation"]) + shift).tolist()
    rig = rig_from_dict({"name": name or str(path), "cameras": entries}, str(path))
    _check_conversion(found, rig, turn, shift, UNITS_MM[units], path)
    return rig


def _check_conversion(found, rig: Rig, turn, shift, scale: float, path) -> None:
    """Points near the capture centre projected by OpenCV's convention (in the calibration's own
    world and units) and by the converted rig must land on the same pixels."""
    points = rig.capture_centre() + PERSON_BOX_MM - [0, 0, CENTRE_HEIGHT_MM / 2]  # this project's world, mm
    original = ((points - shift) @ turn) / scale  # the calibration's world and units
    for (camera_id, rotation, translation, _), camera in zip(found, rig.cameras):
        in_camera = original @ rotation.T + translation
        expected = cameras.distort(in_camera[:, :2] / in_camera[:, 2:], camera) * camera.focal_length + camera.center
        if np.abs(cameras.project(points, camera) - expected).max() > 1e-6:
            raise DataError(f"{path}: camera {printable(camera_id)!r} does not reproject after conversion")
