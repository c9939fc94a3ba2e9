"""Human3.6M archives in the VideoPose3D format: safe loading, validation, preparation.

Data flow (exactly the published IIVFormer pipeline):
archives -> trim 2D to the 3D length -> stack the 4 views per frame -> 3D: keep 17 joints,
metres to millimetres, subtract joint 0 (world frame) -> 2D: mean and standard deviation per
(view, joint, coordinate) from the training subjects only, applied to every split
-> inputs (N, V, J, 2) and targets (N, 1, J, 3), float32.

The archives hold pickled dictionaries. Unpickling can run code, so :func:`read_npz` reads them
with a restricted unpickler that can only build numpy arrays, dicts, lists, tuples, strings and
numbers; anything else is refused with a :class:`DataError`.
"""
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iivformer import skeleton
from iivformer.errors import DataError, one_line

# ---------------------------------------------------------------------------------------------
# Safe reading of .npz archives
# ---------------------------------------------------------------------------------------------

# The only globals a pickled VideoPose3D archive needs: numpy's array reconstruction.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and built-in containers only; every other global is refused."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load the pickled object {module}.{name}")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo):
    """Read one .npy member of an .npz; object arrays go through the restricted unpickler."""
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        if dtype.hasobject:
            value = _PlainDataUnpickler(stream).load()
            if not isinstance(value, np.ndarray):
                raise ValueError("the pickled member is not an array")
            return value
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > info.file_size:
            raise ValueError(f"member {info.filename!r} is truncated")
        array = np.frombuffer(stream.read(count * dtype.itemsize), dtype=dtype, count=count)
        array = array.reshape(shape[::-1]).transpose() if fortran_order else array.reshape(shape)
        return array.copy()


def read_npz(path) -> dict:
    """Read every array of an .npz archive safely. Returns {name: array}; 0-d object arrays are
    unwrapped to their content (the pickled dictionaries of the VideoPose3D format).

    Raises :class:`DataError` (one line naming the file) for a missing, empty, truncated or
    non-archive file, and for any pickled object other than plain data.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an .npz archive")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    contents = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                value = _read_member(archive, info)
                contents[name] = value.item() if value.dtype.hasobject and value.ndim == 0 else value
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not an .npz archive (not a zip file, or truncated)") from None
    except pickle.UnpicklingError as error:
        raise DataError(f"{path}: {one_line(error)}; only plain arrays, dicts, lists, strings and "
                        "numbers are accepted") from None
    except (MemoryError, RecursionError) as error:
        raise DataError(f"{path}: damaged archive ({type(error).__name__})") from None
    except Exception as error:  # zlib, EOF, header and shape errors of a damaged file
        raise DataError(f"{path}: damaged archive ({type(error).__name__}: {one_line(error)})") from None
    if not contents:
        raise DataError(f"{path}: the archive holds no arrays")
    return contents


# ---------------------------------------------------------------------------------------------
# Validation and loading
# ---------------------------------------------------------------------------------------------

def _where(path, subject=None, action=None, camera=None) -> str:
    parts = [str(path)]
    if subject is not None:
        parts.append(f"subject {subject}")
    if action is not None:
        parts.append(f"action {action!r}")
    if camera is not None:
        parts.append(f"camera {camera}")
    return ", ".join(parts)


def _numeric_array(value, where: str, shape_text: str, rank: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise DataError(f"{where}: expected a {shape_text} array, found {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise DataError(f"{where}: expected numbers, found dtype {value.dtype}")
    if value.ndim != rank:
        raise DataError(f"{where}: expected a {shape_text} array, found shape {value.shape}")
    array = value.astype(np.float32, copy=False)
    bad = np.count_nonzero(~np.isfinite(array))
    if bad:
        raise DataError(f"{where}: {bad} non-finite values (NaN or infinite)")
    return array


def _dict_of_dicts(value, path, key) -> dict:
    if not isinstance(value, dict):
        raise DataError(f"{path}: {key!r} should be a dictionary subject -> action, found {type(value).__name__}")
    for subject, actions in value.items():
        if not isinstance(subject, str) or not isinstance(actions, dict):
            raise DataError(f"{path}: {key!r} should map subject names to dictionaries of actions")
        for action in actions:
            if not isinstance(action, str):
                raise DataError(f"{_where(path, subject)}: action names should be strings, found {action!r}")
    return value


def _required(contents: dict, path, key: str):
    if key not in contents:
        found = ", ".join(sorted(contents)) or "nothing"
        raise DataError(f"{path}: missing key {key!r} (found: {found}); is this a VideoPose3D archive?")
    return contents[key]


def load_positions_3d(path) -> dict:
    """Read a 3D archive: {subject: {key: (frames, 17, 3) float32 metres, world}} (32-joint
    motion capture reduced to the 17 joints the model uses)."""
    data = _dict_of_dicts(_required(read_npz(path), path, "positions_3d"), path, "positions_3d")
    positions = {}
    for subject, actions in data.items():
        positions[subject] = {}
        for action, value in actions.items():
            where = _where(path, subject, action)
            array = _numeric_array(value, where, "(frames, 32, 3)", rank=3)
            if array.shape[1] not in (32, 17) or array.shape[2] != 3:
                raise DataError(f"{where}: 3D poses have shape {array.shape}, expected (frames, 32 or 17 joints, 3)")
            if array.shape[0] == 0:
                raise DataError(f"{where}: the recording has no frames")
            positions[subject][action] = skeleton.to_17_joints(array) if array.shape[1] == 32 else array
    return positions


def load_positions_2d(path) -> tuple:
    """Read a 2D archive: ({subject: {key: [4 arrays (frames, 17, 2) float32 pixels]}}, metadata)."""
    contents = read_npz(path)
    data = _dict_of_dicts(_required(contents, path, "positions_2d"), path, "positions_2d")
    metadata = contents.get("metadata", {})
    if not isinstance(metadata, dict):
        raise DataError(f"{path}: 'metadata' should be a dictionary, found {type(metadata).__name__}")
    if metadata.get("num_joints", skeleton.NUM_JOINTS) != skeleton.NUM_JOINTS:
        raise DataError(f"{path}: metadata says {metadata['num_joints']} joints, expected {skeleton.NUM_JOINTS}")
    detections = {}
    for subject, actions in data.items():
        detections[subject] = {}
        for action, views in actions.items():
            if not isinstance(views, (list, tuple)):
                raise DataError(f"{_where(path, subject, action)}: expected a list of 4 camera arrays, "
                                f"found {type(views).__name__}")
            if len(views) != skeleton.NUM_VIEWS:
                raise DataError(f"{_where(path, subject, action)}: 2D for {len(views)} cameras, "
                                f"expected {skeleton.NUM_VIEWS}")
            arrays = []
            for camera, value in enumerate(views):
                where = _where(path, subject, action, camera)
                array = _numeric_array(value, where, "(frames, 17, 2)", rank=3)
                if array.shape[1:] != (skeleton.NUM_JOINTS, 2):
                    raise DataError(f"{where}: 2D keypoints have shape {array.shape}, expected (frames, 17, 2)")
                arrays.append(array)
            detections[subject][action] = arrays
    return detections, metadata


@dataclass
class Archives:
    """A validated pair of archives, 2D trimmed to the 3D length and the 4 views stacked.

    positions_3d: {subject: {key: (F, J, 3) float32, metres, world coordinates}}
    positions_2d: {subject: {key: (F, V, J, 2) float32, pixels}}
    """

    positions_3d: dict
    positions_2d: dict
    metadata: dict = field(default_factory=dict)
    path_3d: str = ""
    path_2d: str = ""

    @property
    def subjects(self) -> list:
        return list(self.positions_3d)

    def keys(self, subject: str) -> list:
        return list(self.positions_3d[subject])

    def frames(self, subject: str, key: str) -> int:
        return len(self.positions_3d[subject][key])

    def summary(self) -> dict:
        """{subject: {action: frames}} with takes of an action added up."""
        table = {}
        for subject, actions in self.positions_3d.items():
            per_action = table.setdefault(subject, {})
            for key, positions in actions.items():
                action = skeleton.action_of(key)
                per_action[action] = per_action.get(action, 0) + len(positions)
        return table

    def describe(self) -> str:
        """A short summary: subjects, actions, cameras, and recordings and frames per subject."""
        summary = self.summary()
        actions = sorted({a for per_subject in summary.values() for a in per_subject})
        lines = [f"3D: {self.path_3d}", f"2D: {self.path_2d}",
                 f"{len(summary)} subjects, {len(actions)} actions, {skeleton.NUM_VIEWS} cameras",
                 f"{'subject':8}{'recordings':>11}{'frames':>10}"]
        for subject, per_action in summary.items():
            lines.append(f"{subject:8}{len(self.keys(subject)):11}{sum(per_action.values()):10}")
        lines.append(f"{'total':8}{'':11}{sum(sum(a.values()) for a in summary.values()):10}")
        return "\n".join(lines)


def load_archives(data_3d, data_2d, subjects=None) -> Archives:
    """Load and cross-check a 3D and a 2D archive (only `subjects`, or every 3D subject).

    Every recording of a chosen subject must have 2D for the 4 cameras with at least as many
    frames as its 3D; extra trailing 2D frames are trimmed, as real detections have them.
    """
    positions_3d = load_positions_3d(data_3d)
    detections, metadata = load_positions_2d(data_2d)
    chosen = list(positions_3d) if subjects is None else list(subjects)
    stacked_3d, stacked_2d = {}, {}
    for subject in chosen:
        if subject not in positions_3d:
            raise DataError(f"{data_3d}: subject {subject} is missing (found: {', '.join(positions_3d)})")
        if subject not in detections:
            raise DataError(f"{data_2d}: subject {subject} is missing (found: {', '.join(detections)})")
        stacked_3d[subject], stacked_2d[subject] = {}, {}
        for key, poses in positions_3d[subject].items():
            if key not in detections[subject]:
                raise DataError(f"{_where(data_2d, subject, key)}: no 2D detections for this 3D recording")
            views = detections[subject][key]
            for camera, view in enumerate(views):
                if len(view) < len(poses):
                    raise DataError(f"{_where(data_2d, subject, key, camera)}: {len(view)} frames of 2D "
                                    f"for {len(poses)} frames of 3D")
            stacked_3d[subject][key] = poses
            stacked_2d[subject][key] = np.stack([view[: len(poses)] for view in views], axis=1)
        del detections[subject]  # free the unstacked copy as we go
    return Archives(stacked_3d, stacked_2d, metadata, str(data_3d), str(data_2d))


# ---------------------------------------------------------------------------------------------
# Preparation for the model
# ---------------------------------------------------------------------------------------------

@dataclass
class Normalization:
    """Mean and standard deviation of the 2D inputs per (view, joint, coordinate), shape (V, J, 2)."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Normalise pixel keypoints (..., V, J, 2) -> float32."""
        return ((pixels - self.mean) / self.std).astype(np.float32, copy=False)

    def invert(self, normalized: np.ndarray) -> np.ndarray:
        """Pixels (..., V, J, 2) of normalised inputs."""
        return normalized * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, values: dict) -> "Normalization":
        return cls(np.asarray(values["mean"], dtype=np.float32), np.asarray(values["std"], dtype=np.float32))


@dataclass
class Split:
    """The samples of some subjects. Each sample traces back to its recording and frame.

    inputs: (N, V, J, 2) float32, normalised 2D; targets: (N, 1, J, 3) float32, millimetres,
    root-relative, world frame; recordings: [(subject, archive key)];
    recording_index, frame_index: (N,) int32.
    """

    inputs: np.ndarray
    targets: np.ndarray
    recordings: list
    recording_index: np.ndarray
    frame_index: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def subjects(self) -> np.ndarray:
        """Subject of every sample, (N,) strings."""
        return np.array([subject for subject, _ in self.recordings] or [""])[self.recording_index]

    @property
    def keys(self) -> np.ndarray:
        """Archive key of every sample, (N,) strings ('Walking 1')."""
        return np.array([key for _, key in self.recordings] or [""])[self.recording_index]

    @property
    def actions(self) -> np.ndarray:
        """Action of every sample, (N,) strings ('Walking')."""
        return np.array([skeleton.action_of(key) for _, key in self.recordings] or [""])[self.recording_index]

    def subset(self, mask) -> "Split":
        """The samples where `mask` (boolean (N,) or indices) holds."""
        return Split(self.inputs[mask], self.targets[mask], self.recordings,
                     self.recording_index[mask], self.frame_index[mask])


@dataclass
class Prepared:
    """Everything the model needs: train, test (and optional validation) splits and the statistics."""

    train: Split
    test: Split
    normalization: Normalization
    train_subjects: tuple
    test_subjects: tuple
    val: Split = None
    val_subjects: tuple = ()
    archives: Archives = None


def _parse_subjects(subjects, what: str) -> tuple:
    subjects = tuple(subjects)
    if len(set(subjects)) != len(subjects):
        raise DataError(f"{what} subjects repeat a subject: {', '.join(subjects)}")
    return subjects


def _fill_split(archives: Archives, subjects) -> Split:
    """Stack the recordings of `subjects`: raw pixel inputs and root-relative millimetre targets."""
    recordings = [(subject, key) for subject in subjects for key in archives.keys(subject)]
    total = sum(archives.frames(subject, key) for subject, key in recordings)
    inputs = np.empty((total, skeleton.NUM_VIEWS, skeleton.NUM_JOINTS, 2), dtype=np.float32)
    targets = np.empty((total, 1, skeleton.NUM_JOINTS, 3), dtype=np.float32)
    recording_index = np.empty(total, dtype=np.int32)
    frame_index = np.empty(total, dtype=np.int32)
    start = 0
    for index, (subject, key) in enumerate(recordings):
        positions_mm = archives.positions_3d[subject][key] * np.float32(1000)
        stop = start + len(positions_mm)
        targets[start:stop, 0] = positions_mm - positions_mm[:, :1]
        inputs[start:stop] = archives.positions_2d[subject][key]
        recording_index[start:stop] = index
        frame_index[start:stop] = np.arange(stop - start)
        start = stop
    return Split(inputs, targets, recordings, recording_index, frame_index)


def _statistics(inputs: np.ndarray, chunk: int = 262144) -> Normalization:
    """Mean and (population) standard deviation over samples, in float64, chunk by chunk."""
    if len(inputs) == 0:
        raise DataError("the training subjects have no frames to compute the normalisation from")
    total = np.zeros(inputs.shape[1:], dtype=np.float64)
    for start in range(0, len(inputs), chunk):
        total += inputs[start:start + chunk].sum(axis=0, dtype=np.float64)
    mean = total / len(inputs)
    squares = np.zeros_like(total)
    for start in range(0, len(inputs), chunk):
        squares += np.square(inputs[start:start + chunk] - mean).sum(axis=0)
    std = np.sqrt(squares / len(inputs))
    return Normalization(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))


def normalize_in_place(inputs: np.ndarray, normalization: Normalization, chunk: int = 262144) -> None:
    for start in range(0, len(inputs), chunk):
        block = inputs[start:start + chunk]
        block -= normalization.mean
        block /= normalization.std


def prepare(data_3d, data_2d=None, train_subjects=skeleton.TRAIN_SUBJECTS,
            test_subjects=skeleton.TEST_SUBJECTS, val_subjects=(), normalization=None,
            keep_archives=False) -> Prepared:
    """Load (if given paths), validate and prepare archives exactly as the published pipeline does.

    `data_3d`, `data_2d`: paths of the two archives, or `data_3d` an :class:`Archives` already
    loaded. The statistics come from `train_subjects` only and apply to every split.
    `val_subjects` (taken out of training) give a held-out validation split. A given
    `normalization` (from a checkpoint) is applied instead of computing one.
    """
    train_subjects = _parse_subjects(train_subjects, "training")
    test_subjects = _parse_subjects(test_subjects, "test")
    val_subjects = _parse_subjects(val_subjects, "validation")
    for first, second, names in ((train_subjects, test_subjects, "training and test"),
                                 (train_subjects, val_subjects, "training and validation"),
                                 (val_subjects, test_subjects, "validation and test")):
        shared = sorted(set(first) & set(second))
        if shared:
            raise DataError(f"the {names} subjects overlap: {', '.join(shared)}")
    if not train_subjects and normalization is None:
        raise DataError("no training subjects given")
    wanted = list(dict.fromkeys(train_subjects + val_subjects + test_subjects))
    archives = data_3d if isinstance(data_3d, Archives) else load_archives(data_3d, data_2d, wanted)
    for subject in wanted:
        if subject not in archives.positions_3d:
            raise DataError(f"{archives.path_3d}: subject {subject} is missing "
                            f"(found: {', '.join(archives.subjects)})")
    train = _fill_split(archives, train_subjects)
    if normalization is None:
        normalization = _statistics(train.inputs)
    splits = [train, _fill_split(archives, test_subjects)]
    if val_subjects:
        splits.append(_fill_split(archives, val_subjects))
    for split in splits:
        normalize_in_place(split.inputs, normalization)
    return Prepared(train=splits[0], test=splits[1], normalization=normalization,
                    train_subjects=train_subjects, test_subjects=test_subjects,
                    val=splits[2] if val_subjects else None, val_subjects=val_subjects,
                    archives=archives if keep_archives or isinstance(data_3d, Archives) else None)


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


def atomic_write(path, write) -> None:
    """Call write(temporary_path), then rename it to `path`: never a half-written file at `path`."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
