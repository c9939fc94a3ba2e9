"""Real motion capture as VideoPose3D-format archives: BVH recordings seen by any camera rig.

A recording (:mod:`iivformer.bvh`) becomes the 17 Human3.6M joints (:data:`CMU_MAPPING` or a mapping
file), in metres (:data:`UNITS`, or ``auto``: the unit that gives the rest pose a person's standing
height), Z up (a rotation, never a mirror; a wrong ``--up`` is refused, the head must be above the
ankles), at :data:`iivformer.skeleton.FPS` frames a second (linear interpolation of the positions),
standing on the floor (Z = 0 at the 5th percentile over frames of the lowest point of the feet, the
ankles, toes and their end sites, so that a few frames where a glitch puts a toe under the floor do
not lift the person), turned and moved about the vertical into the rig's capture volume
(:func:`iivformer.synthetic.scene.place`), and projected through the rig's cameras with an optional
detector-like error (:func:`iivformer.synthetic.detector.make_detections`; default 0 px, exact
projections: the 2D is the 3D seen by the cameras, and any error is added knowingly).
:func:`import_bvh` writes ``data_3d_h36m.npz`` (17 joints, metres) and ``data_2d_h36m_mocap.npz``.

A mapping file is JSON with one entry for each of the 17 joints: a BVH joint name, an end site as
``"<joint>/end"``, or a point between two of them::

    {"Hip": "Hips", "RHip": "RightHip", ..., "Head": "Head/end",
     "Spine": {"between": ["Chest", "Chest2"], "at": 0.5}}

``at`` runs from 0 (the first) to 1 (the second). The recordings are named ``"<action> <file stem>"``.
"""
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from iivformer import skeleton
from iivformer.bvh import Bvh, read_bvh
from iivformer.errors import DataError, IIVFormerError, printable
from iivformer.files import check_distinct, check_writable, read_limited

# CMU (31 joints; rest pose above the hips: Chest 0.11 m, Chest2 and lowerneck 0.22, the shoulders 0.31,
# Neck 0.31, Head 0.41, the Head end site 0.50). Each Human3.6M bone lies within one rigid CMU segment, so
# its length is constant (Thorax = lowerneck sits where both collar bones start), except Nose -> Head,
# which spans the upper neck and the head (sd 0.1-0.9 mm on the shipped clips). Thorax = Neck would put
# the thorax at shoulder height, but its bones to the shoulders would change length by up to 6 mm sd.
CMU_MAPPING = {
    "Hip": "Hips", "RHip": "RightHip", "RKnee": "RightKnee", "RFoot": "RightAnkle",
    "LHip": "LeftHip", "LKnee": "LeftKnee", "LFoot": "LeftAnkle",
    "Spine": "Chest", "Thorax": "lowerneck", "Nose": "Neck", "Head": "Head/end",
    "LShoulder": "LeftShoulder", "LElbow": "LeftElbow", "LWrist": "LeftWrist",
    "RShoulder": "RightShoulder", "RElbow": "RightElbow", "RWrist": "RightWrist",
}
CMU_ACTIONS = {"cmu_scaled_131_01": "Walking", "cmu_scaled_131_02": "Hopping", "cmu_scaled_131_03": "Walking"}
UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001, "in": 0.0254}  # metres per file unit
STANDING_M = (0.9, 2.2)  # head to ankles of a person 1.0 to 2.3 m tall (ratio < 2.54: one unit fits)
UP_AXES = {"y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),  # +90 degrees about X: Y -> Z, Z -> -Y
           "z": np.eye(3)}
FLOOR_PERCENTILE = 5
DETECTOR = "mocap"  # the 2D archive is data_2d_h36m_mocap.npz
MAX_MAPPING_BYTES = 64 << 10
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def cmu_clips() -> list:
    """Paths of the three CMU recordings shipped with the package (subject 131; see their README.md
    for the acknowledgement); CMU_ACTIONS gives each stem's action."""
    folder = resources.files("iivformer").joinpath("resources/cmu_mocap")
    return sorted(Path(str(folder.joinpath(stem + ".bvh"))) for stem in CMU_ACTIONS)


# ------------------------------------------------------------------------------ the joint mapping

def load_mapping(path) -> dict:
    """A mapping file (JSON, see the module docstring), checked against the 17 joint names."""
    data = read_limited(path, MAX_MAPPING_BYTES, "a joint mapping JSON file", error=DataError)
    try:
        mapping = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a JSON joint mapping ({printable(error)[:80]})") from None
    check_mapping(mapping, path)
    return mapping


def check_mapping(mapping, source) -> None:
    """One DataError line unless `mapping` gives each of the 17 joints a name or a point between two."""
    if not isinstance(mapping, dict) or set(mapping) != set(skeleton.JOINT_NAMES):
        have = set(mapping) if isinstance(mapping, dict) else set()
        missing, extra = sorted(set(skeleton.JOINT_NAMES) - have), sorted(map(str, have - set(skeleton.JOINT_NAMES)))
        raise DataError(f"{source}: a mapping has one entry for each of the 17 joints "
                        f"({', '.join(skeleton.JOINT_NAMES)}); missing: {', '.join(missing) or 'none'}; "
                        f"unknown: {printable(', '.join(extra))[:80] or 'none'}")
    for joint, target in mapping.items():
        if isinstance(target, str) and 0 < len(target) <= 200:
            continue
        between = target.get("between") if isinstance(target, dict) else None
        at = target.get("at", 0.5) if isinstance(target, dict) else None
        if not (isinstance(between, list) and len(between) == 2 and all(isinstance(n, str) for n in between)
                and isinstance(at, (int, float)) and not isinstance(at, bool) and 0 <= at <= 1
                and set(target) <= {"between", "at"}):
            raise DataError(f"{source}: {joint}: expected a BVH joint name, '<joint>/end', or "
                            '{"between": ["A", "B"], "at": 0 to 1}')


def map_joints(bvh: Bvh, points: np.ndarray, mapping: dict, source: str) -> np.ndarray:
    """(..., 17, 3) from (..., J, 3) positions of every BVH point, by the mapping."""
    def index(name):
        if name not in bvh.names:
            hint = ", ".join(name for name in bvh.names if "/" not in name)
            raise DataError(f"{bvh.path}: no joint {printable(name)[:60]!r} for {source} (joints: {printable(hint)[:300]})")
        return bvh.index(name)

    out = []
    for joint in skeleton.JOINT_NAMES:
        target = mapping[joint]
        if isinstance(target, str):
            out.append(points[..., index(target), :])
        else:
            first, second = (points[..., index(name), :] for name in target["between"])
            at = float(target.get("at", 0.5))
            out.append((1 - at) * first + at * second)
    return np.stack(out, axis=-2)


# ------------------------------------------------------------------------------ units, up, time, floor

def unit_scale(bvh: Bvh, mapping: dict, units: str) -> tuple:
    """(metres per file unit, the unit's name, standing height in metres): the named unit, or for
    'auto' the one that makes the rest pose's head-to-ankles distance (the height of the head above
    the ankles when standing, whichever way the file is turned) that of a person."""
    rest = map_joints(bvh, bvh.rest_positions(), mapping, "the mapping")
    ankles = (rest[skeleton.JOINT_INDEX["RFoot"]] + rest[skeleton.JOINT_INDEX["LFoot"]]) / 2
    height = float(np.linalg.norm(rest[skeleton.JOINT_INDEX["Head"]] - ankles))
    if units != "auto":
        return UNITS[units], units, height * UNITS[units]
    fitting = [name for name, scale in UNITS.items() if STANDING_M[0] <= height * scale <= STANDING_M[1]]
    if not fitting:
        raise DataError(f"{bvh.path}: no unit makes the rest pose a person (head to ankles is {height:.4g} file "
                        f"units; expected {STANDING_M[0]}-{STANDING_M[1]} m); give --units")
    return UNITS[fitting[0]], fitting[0], height * UNITS[fitting[0]]


def _feet(bvh: Bvh, mapping: dict) -> list:
    """Indices of the BVH points of the feet: those the mapping names for RFoot and LFoot, and all
    their descendants (toes, end sites)."""
    feet = set()
    for joint in ("RFoot", "LFoot"):
        target = mapping[joint]
        feet.update(bvh.index(name) for name in ([target] if isinstance(target, str) else target["between"]))
    for point, parent in enumerate(bvh.parents):  # parents come before their children
        if parent in feet:
            feet.add(point)
    return sorted(feet)


def check_upright(path, joints: np.ndarray, height_m: float, up: str) -> None:
    """One DataError line unless the head is above the ankles (by half the standing height, in the
    median frame): a wrong --up lays the person down."""
    head = joints[:, skeleton.JOINT_INDEX["Head"], 2]
    ankles = (joints[:, skeleton.JOINT_INDEX["RFoot"], 2] + joints[:, skeleton.JOINT_INDEX["LFoot"], 2]) / 2
    rise = float(np.median(head - ankles))
    if rise < 0.5 * height_m:
        raise DataError(f"{path}: with --up {up} the head is {rise:.2f} m above the ankles (median frame) in a "
                        f"person {height_m:.2f} m tall from head to ankles: check --up")


def resample(positions: np.ndarray, fps_in: float, fps_out: float = skeleton.FPS) -> np.ndarray:
    """Positions (F, ...) at fps_in resampled to fps_out by linear interpolation over the same span."""
    frames = len(positions)
    count = int(np.floor((frames - 1) / fps_in * fps_out + 1e-9)) + 1
    where = np.arange(count) * (fps_in / fps_out)
    lower = np.minimum(np.floor(where).astype(int), frames - 1)
    upper = np.minimum(lower + 1, frames - 1)
    weight = (where - lower).reshape((-1,) + (1,) * (positions.ndim - 1))
    return (1 - weight) * positions[lower] + weight * positions[upper]


@dataclass(frozen=True)
class Clip:
    """A BVH recording as 17 joints: (F, 17, 3) metres, Z up, floor at Z = 0, skeleton.FPS frames a second."""

    path: str
    positions: np.ndarray
    unit: str
    height_m: float
    source_frames: int
    source_fps: float
    bvh_joints: int  # joints, end sites not counted


def read_clip(path, mapping: dict = None, units: str = "auto", up: str = "y") -> Clip:
    """Read a BVH file as a :class:`Clip` (CMU_MAPPING unless a mapping is given)."""
    if units != "auto" and units not in UNITS:
        raise IIVFormerError(f"units {units!r}: choose from auto, {', '.join(UNITS)}")
    if up not in UP_AXES:
        raise IIVFormerError(f"up axis {up!r}: choose from {', '.join(UP_AXES)}")
    if mapping is not None:
        check_mapping(mapping, "the mapping")
    bvh = read_bvh(path)
    mapping = CMU_MAPPING if mapping is None else mapping
    scale, unit, height = unit_scale(bvh, mapping, units)
    points = bvh.positions() @ (UP_AXES[up].T * scale)
    floor = np.percentile(points[:, _feet(bvh, mapping), 2].min(axis=1), FLOOR_PERCENTILE)
    joints = map_joints(bvh, points, mapping, "the mapping")
    joints[..., 2] -= floor
    check_upright(path, joints, height, up)
    joint_count = sum(1 for name in bvh.names if "/end" not in name)
    return Clip(str(path), resample(joints, bvh.fps), unit, height, bvh.frames, bvh.fps, joint_count)


# ------------------------------------------------------------------------------ into a rig, onto disk

def _actions(paths: list, actions) -> list:
    """One action per file: the given one(s) (one for all, or one per file), else CMU_ACTIONS or the stem."""
    if actions is None:
        return [CMU_ACTIONS.get(Path(p).stem, re.sub(r"[^A-Za-z0-9_-]", "_", Path(p).stem)[:40]) for p in paths]
    actions = [actions] if isinstance(actions, str) else list(actions)
    if len(actions) not in (1, len(paths)):
        raise IIVFormerError(f"--action: give one action, or one for each of the {len(paths)} files, not {len(actions)}")
    for action in actions:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", action):
            raise IIVFormerError(f"--action {printable(action)[:60]!r}: an action is 1-40 letters, digits, '_' or '-'")
    return actions * len(paths) if len(actions) == 1 else actions


def _rig_for(subject: str, rig):
    """(rig to project through, rig to write in the 2D metadata or None for Human3.6M's own cameras)."""
    from iivformer.rig import h36m_rig

    if not isinstance(subject, str) or not _NAME.fullmatch(subject):
        raise IIVFormerError(f"--subject {printable(subject)[:60]!r}: a subject is 1-40 letters, digits, '_', '.' or '-'")
    if rig is not None:
        return rig, rig
    try:
        return h36m_rig(subject), None
    except IIVFormerError:
        raise IIVFormerError(f"--subject {subject}: no built-in Human3.6M rig for this subject; give --rig FILE") from None


def check_output(out_dir, inputs=()) -> Path:
    """The output folder, checked before any work: writable where it exists, its two archives writable
    and none of the `inputs`."""
    out = Path(out_dir)
    existing = next(folder for folder in (out.absolute(), *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise IIVFormerError(f"--out {out}: {existing} is not a folder")
    archives = {"--out (3D)": out / "data_3d_h36m.npz", "--out (2D)": out / f"data_2d_h36m_{DETECTOR}.npz"}
    if existing == out.absolute():
        for path in archives.values():
            check_writable(path, "--out")
    elif not os.access(existing, os.W_OK | os.X_OK):
        raise IIVFormerError(f"--out {out}: the folder {existing} is not writable")
    check_distinct(archives, {str(path): path for path in inputs})
    return out


def import_bvh(paths, out_dir, rig=None, subject: str = "S9", actions=None, mapping: dict = None,
               units: str = "auto", up: str = "y", detector_noise: float = 0.0, seed: int = 0) -> tuple:
    """Import BVH files into an archive pair in out_dir; returns (path_3d, path_2d, one line per clip)."""
    from iivformer.synthetic import write_pair
    from iivformer.synthetic.detector import check_detector_noise, make_detections
    from iivformer.synthetic.scene import image_margin, place, rig_room_centre
    from iivformer.synthetic.seeds import check_seed, tag

    paths = [str(path) for path in paths]
    if not paths:
        raise IIVFormerError("give at least one BVH file")
    check_seed(seed)
    check_detector_noise(detector_noise)
    actions = _actions(paths, actions)
    rig, written_rig = _rig_for(subject, rig)
    out = check_output(out_dir, paths)
    centre, recordings, lines = rig_room_centre(rig), {}, []
    for path, action in zip(paths, actions):
        clip = read_clip(path, mapping, units, up)
        name = f"{action} {Path(path).stem}"
        if name in recordings:
            raise IIVFormerError(f"{path}: a second recording named {printable(name)!r}; rename the file")
        rng = np.random.default_rng([seed, tag("mocap", subject, name)])
        placed = place(clip.positions, subject, rng, rig, centre)
        recordings[name] = placed.astype(np.float32)
        margin = float(image_margin(placed, rig.cameras))
        root = clip.positions[:, 0, :2]
        lines.append(f"{Path(path).name}: {clip.bvh_joints} joints, {clip.source_frames} frames at "
                     f"{clip.source_fps:.4g} fps -> {printable(name)!r}: {len(placed)} frames at {skeleton.FPS} fps; "
                     f"units {clip.unit} (standing {clip.height_m:.2f} m head to ankle), up {up}; the root spans "
                     f"{np.ptp(root, axis=0).max():.2f} m; nearest image border {margin:.0f} px"
                     + (" (joints leave the images: a rig with a wider view would see them)" if margin < 0 else ""))
    positions_3d = {subject: recordings}
    positions_2d = make_detections(positions_3d, seed, detector_noise, rig=rig)
    out.mkdir(parents=True, exist_ok=True)
    path_3d, path_2d = write_pair(out, positions_3d, positions_2d, rig=written_rig, detector=DETECTOR)
    return path_3d, path_2d, lines
