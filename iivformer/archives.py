"""Human3.6M archives in the VideoPose3D format: safe reading, validation and discovery.

An archive pair is a 3D file (``positions_3d``: subject -> recording -> (F, 32, 3) metres, world
frame) and a 2D file (``positions_2d``: subject -> recording -> 4 arrays (F, 17, 2) pixels, one per
camera; or one per camera of the rig its metadata names, see :mod:`iivformer.rig`). A recording is named by its archive key, such as ``"Walking 1"``; its action is the text
before the first space.

The archives hold pickled dictionaries. Unpickling can run code, so they are read by
:func:`iivformer.npz.read_npz`, which builds plain data only (numeric arrays, dicts, lists, tuples,
strings, numbers) and reads only the members asked for; anything else is refused with a
:class:`DataError`. :func:`load_archives` validates and
cross-checks a pair, trims the 2D to the 3D length and stacks the views; :func:`find_archives`
finds the pair to use in a data folder.
"""
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iivformer import skeleton
from iivformer.errors import DataError, printable
from iivformer.files import sha256
from iivformer.npz import read_npz
from iivformer.rig import rig_of_metadata

# ---------------------------------------------------------------------------------------------
# Validation and loading
# ---------------------------------------------------------------------------------------------

def _where(path, subject=None, recording=None, camera=None) -> str:
    parts = [str(path)]
    if subject is not None:
        parts.append(f"subject {subject}")
    if recording is not None:
        parts.append(f"recording {recording!r}")
    if camera is not None:
        parts.append(f"camera {camera}")
    return ", ".join(parts)


MAX_METRES = 1e3  # a 3D position beyond a kilometre from the origin is not a person in a room
MAX_PIXELS = 1e6


def _numeric_array(value, where: str, shape_text: str, rank: int, limit: float, unit: str) -> np.ndarray:
    """`value` as a finite float32 array of the given rank, its magnitudes at most `limit`."""
    if not isinstance(value, np.ndarray):
        raise DataError(f"{where}: expected a {shape_text} array, found {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise DataError(f"{where}: expected numbers, found dtype {value.dtype}")
    if value.ndim != rank:
        raise DataError(f"{where}: expected a {shape_text} array, found shape {value.shape}")
    bad = np.count_nonzero(~np.isfinite(value)) if value.dtype.kind == "f" else 0
    if bad:
        raise DataError(f"{where}: {bad} non-finite values (NaN or infinite)")
    with np.errstate(over="ignore"):  # checked just below
        array = value.astype(np.float32, copy=False)
    if value.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{where}: values too large for float32 (up to {np.abs(value).max():.3g})")
    if array.size and np.abs(array).max() > limit:
        raise DataError(f"{where}: values up to {np.abs(array).max():.3g} {unit}, beyond {limit:g} {unit}; "
                        "are the units right?")
    return array


def _dict_of_dicts(value, path, key) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{path}: {key!r} should be a dictionary subject -> recording, found {type(value).__name__}")
    for subject, recordings in value.items():
        if not isinstance(subject, str) or not isinstance(recordings, dict):
            raise DataError(f"{path}: {key!r} should map subject names to dictionaries of recordings")
        for recording in recordings:
            if not isinstance(recording, str):
                raise DataError(f"{_where(path, subject)}: recording names should be strings, found {recording!r}")
    return value


def _required(contents: dict, path, key: str):
    if key not in contents:
        with zipfile.ZipFile(path) as archive:  # read_npz opened it already: a valid zip
            names = sorted(name[:-4] if name.endswith(".npy") else name for name in archive.namelist())
        raise DataError(f"{path}: missing key {key!r} (found: {_listing(names)}); is this a VideoPose3D archive?")
    return contents[key]


def load_positions_3d(path) -> dict:
    """Read a 3D archive: {subject: {recording: (frames, 17, 3) float32 metres, world}} (32-joint
    motion capture reduced to the 17 joints the model uses)."""
    contents = read_npz(path, members=("positions_3d",))
    data = _dict_of_dicts(_required(contents, path, "positions_3d"), path, "positions_3d")
    positions = {}
    for subject, recordings in data.items():
        positions[subject] = {}
        for recording, value in recordings.items():
            where = _where(path, subject, recording)
            array = _numeric_array(value, where, "(frames, 32, 3)", 3, MAX_METRES, "m")
            if array.shape[1] not in (32, 17) or array.shape[2] != 3:
                raise DataError(f"{where}: 3D poses have shape {array.shape}, expected (frames, 32 or 17 joints, 3)")
            if array.shape[0] == 0:
                raise DataError(f"{where}: the recording has no frames")
            positions[subject][recording] = skeleton.to_17_joints(array) if array.shape[1] == 32 else array
    return positions


def load_positions_2d(path) -> tuple:
    """Read a 2D archive: ({subject: {recording: [V arrays (frames, 17, 2) float32 pixels]}}, metadata,
    rig), with V = 4 for Human3.6M (rig None) or the camera count of the rig the metadata names."""
    contents = read_npz(path, members=("positions_2d", "metadata"))
    data = _dict_of_dicts(_required(contents, path, "positions_2d"), path, "positions_2d")
    metadata = contents.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(f"{path}: 'metadata' should be a dictionary, found {type(metadata).__name__}")
    if metadata.get("num_joints", skeleton.NUM_JOINTS) != skeleton.NUM_JOINTS:
        raise DataError(f"{path}: metadata says {metadata['num_joints']} joints, expected {skeleton.NUM_JOINTS}")
    rig = rig_of_metadata(metadata, path)
    num_views = skeleton.NUM_VIEWS if rig is None else len(rig)
    detections = {}
    for subject, recordings in data.items():
        detections[subject] = {}
        for recording, views in recordings.items():
            if not isinstance(views, (list, tuple)):
                raise DataError(f"{_where(path, subject, recording)}: expected a list of {num_views} camera "
                                f"arrays, found {type(views).__name__}")
            if len(views) != num_views:
                raise DataError(f"{_where(path, subject, recording)}: 2D for {len(views)} cameras, "
                                f"expected {num_views}" + ("" if rig is None else f" (the cameras of rig {rig.name!r})"))
            arrays = []
            for camera, value in enumerate(views):
                where = _where(path, subject, recording, camera)
                array = _numeric_array(value, where, "(frames, 17, 2)", 3, MAX_PIXELS, "px")
                if array.shape[1:] != (skeleton.NUM_JOINTS, 2):
                    raise DataError(f"{where}: 2D keypoints have shape {array.shape}, expected (frames, 17, 2)")
                arrays.append(array)
            detections[subject][recording] = arrays
    return detections, metadata, rig


def read_rig(path_2d):
    """The rig a 2D archive names (checked), or None for Human3.6M's cameras; reads only its metadata."""
    metadata = read_npz(path_2d, members=("metadata",)).get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(f"{path_2d}: 'metadata' should be a dictionary, found {type(metadata).__name__}")
    return rig_of_metadata(metadata, path_2d)


@dataclass
class Archives:
    """A validated pair of archives, 2D trimmed to the 3D length and the views stacked.

    positions_3d: {subject: {recording: (F, J, 3) float32, metres, world coordinates}}
    positions_2d: {subject: {recording: (F, V, J, 2) float32, pixels}}
    rig: the :class:`~iivformer.rig.Rig` the 2D names, or None for Human3.6M (each subject's 4 cameras)
    """

    positions_3d: dict
    positions_2d: dict
    metadata: dict = field(default_factory=dict)
    path_3d: str = ""
    path_2d: str = ""
    rig: object = None

    @property
    def num_views(self) -> int:
        return skeleton.NUM_VIEWS if self.rig is None else len(self.rig)

    @property
    def subjects(self) -> list:
        return list(self.positions_3d)

    def recordings(self, subject: str) -> list:
        """The recordings of a subject, named by their archive keys ('Walking 1')."""
        return list(self.positions_3d[subject])

    def frames(self, subject: str, recording: str) -> int:
        return len(self.positions_3d[subject][recording])

    def summary(self) -> dict:
        """{subject: {action: frames}} with the recordings of an action added up."""
        table = {}
        for subject, recordings in self.positions_3d.items():
            per_action = table.setdefault(subject, {})
            for recording, positions in recordings.items():
                action = skeleton.action_of(recording)
                per_action[action] = per_action.get(action, 0) + len(positions)
        return table

    def describe(self) -> str:
        """A short summary: subjects, actions, cameras, and recordings and frames per subject."""
        summary = self.summary()
        actions = sorted({a for per_subject in summary.values() for a in per_subject})
        lines = [f"3D: {printable(self.path_3d)}", f"2D: {printable(self.path_2d)}",
                 f"{len(summary)} subjects, {len(actions)} actions, {self.num_views} cameras "
                 f"({'Human3.6M' if self.rig is None else 'rig ' + printable(self.rig.name)})",
                 f"{'subject':8}{'recordings':>11}{'frames':>10}"]
        for subject, per_action in summary.items():
            lines.append(f"{printable(subject):8}{len(self.recordings(subject)):11}{sum(per_action.values()):10}")
        lines.append(f"{'total':8}{'':11}{sum(sum(a.values()) for a in summary.values()):10}")
        return "\n".join(lines)


def load_archives(data_3d, data_2d, subjects=None) -> Archives:
    """Load and cross-check a 3D and a 2D archive (only `subjects`, or every 3D subject).

    Every recording of a chosen subject must have 2D for the 4 cameras with at least as many
    frames as its 3D; extra trailing 2D frames are trimmed, as real detections have them.
    """
    positions_3d = load_positions_3d(data_3d)
    detections, metadata, rig = load_positions_2d(data_2d)
    _check_pair(data_3d, data_2d, metadata)
    chosen = list(positions_3d) if subjects is None else list(subjects)
    stacked_3d, stacked_2d = {}, {}
    for subject in chosen:
        if subject not in positions_3d:
            raise DataError(f"{data_3d}: subject {subject} is missing (found: {_listing(positions_3d)})")
        if subject not in detections:
            raise DataError(f"{data_2d}: subject {subject} is missing (found: {_listing(detections)})")
        if not positions_3d[subject]:
            raise DataError(f"{data_3d}: subject {subject} has no recordings")
        stacked_3d[subject], stacked_2d[subject] = {}, {}
        for recording, poses in positions_3d[subject].items():
            if recording not in detections[subject]:
                raise DataError(f"{_where(data_2d, subject, recording)}: no 2D detections for this 3D recording")
            views = detections[subject][recording]
            for camera, view in enumerate(views):
                if len(view) < len(poses):
                    raise DataError(f"{_where(data_2d, subject, recording, camera)}: {len(view)} frames of 2D "
                                    f"for {len(poses)} frames of 3D")
            stacked_3d[subject][recording] = poses
            stacked_2d[subject][recording] = np.stack([view[: len(poses)] for view in views], axis=1)
        del detections[subject]  # free the unstacked copy as we go
    return Archives(stacked_3d, stacked_2d, metadata, str(data_3d), str(data_2d), rig)


def _listing(names) -> str:
    return ", ".join(map(str, names)) or "nothing"


PAIR_KEY = "positions_3d_sha256"  # in a 2D archive's metadata: the 3D archive it was made from


def _check_pair(data_3d, data_2d, metadata: dict) -> None:
    """Refuse a 2D archive whose metadata names another 3D archive than `data_3d` (a pair broken by
    a run killed between its two writes, or archives of two different runs)."""
    expected = metadata.get(PAIR_KEY)
    if expected is not None and expected != sha256(data_3d):
        raise DataError(f"{data_2d}: was made from another 3D archive than {data_3d} (a pair from two runs); "
                        "make the pair again (iivformer synth)")


SYNTHETIC_FOLDER = "synthetic"  # under the data folder: where the embedded default dataset is made


def find_archives(folder="data") -> tuple:
    """The archives to use from `folder`: (path_3d, path_2d, "Human3.6M" or "synthetic"), or None.

    Real Human3.6M archives linked into `folder` win (the CPN detections the published model was
    trained on first, then any other detector); otherwise a synthetic set made in
    `folder/synthetic/<preset>` (small, then full, then tiny).
    """
    folder = Path(folder)
    path_3d = folder / "data_3d_h36m.npz"
    if path_3d.exists():
        preferred = folder / "data_2d_h36m_cpn_ft_h36m_dbb.npz"
        others = sorted(p for p in folder.glob("data_2d_h36m_*.npz") if "synthetic" not in p.name)
        if preferred.exists() or others:
            return path_3d, preferred if preferred.exists() else others[0], "Human3.6M"
    for synthetic in [folder / SYNTHETIC_FOLDER / preset for preset in ("small", "full", "tiny")]:
        if (synthetic / "data_3d_h36m.npz").exists() and (synthetic / "data_2d_h36m_synthetic.npz").exists():
            return synthetic / "data_3d_h36m.npz", synthetic / "data_2d_h36m_synthetic.npz", "synthetic"
    return None
