"""Preparing validated archives for the model, exactly as the published IIVFormer pipeline does.

archives -> 3D: keep 17 joints, metres to millimetres, subtract joint 0 (world frame) -> 2D: mean
and standard deviation per (view, joint, coordinate) from the training subjects only, applied to
every split -> inputs (N, V, J, 2) and targets (N, 1, J, 3), float32, each sample traced back to
its recording and frame.
"""
from dataclasses import dataclass

import numpy as np

from iivformer import skeleton
from iivformer.archives import Archives, load_archives
from iivformer.errors import DataError


@dataclass
class Normalization:
    """Mean and standard deviation of the 2D inputs per (view, joint, coordinate), shape (V, J, 2)."""

    mean: np.ndarray
    std: np.ndarray

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
    root-relative, world frame; sources: [(subject, recording)], the recordings the samples come
    from, a recording named by its archive key such as "Walking 1"; source_index (N,) int32: the
    source of every sample; frame_index (N,) int32: its frame in that recording.
    """

    inputs: np.ndarray
    targets: np.ndarray
    sources: list
    source_index: np.ndarray
    frame_index: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def subjects(self) -> np.ndarray:
        """Subject of every sample, (N,) strings."""
        return np.array([subject for subject, _ in self.sources] or [""])[self.source_index]

    @property
    def recordings(self) -> np.ndarray:
        """Recording of every sample, (N,) strings ('Walking 1')."""
        return np.array([recording for _, recording in self.sources] or [""])[self.source_index]

    @property
    def actions(self) -> np.ndarray:
        """Action of every sample, (N,) strings ('Walking')."""
        return np.array([skeleton.action_of(name) for _, name in self.sources] or [""])[self.source_index]

    def subset(self, mask) -> "Split":
        """The samples where `mask` (boolean (N,) or indices) holds."""
        return Split(self.inputs[mask], self.targets[mask], self.sources,
                     self.source_index[mask], self.frame_index[mask])

    def every(self, n: int) -> "Split":
        """Every `n`-th sample: the first, the n+1-th, ... (at 50 fps neighbouring frames are nearly alike)."""
        return self.subset(np.arange(0, len(self), n))


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
    views: tuple = tuple(range(skeleton.NUM_VIEWS))  # the cameras of the inputs' view axis, in order
    rig: object = None  # the archives' rig (iivformer.rig.Rig), None for Human3.6M's per-subject cameras


def _parse_subjects(subjects, what: str) -> tuple:
    subjects = tuple(subjects)
    if len(set(subjects)) != len(subjects):
        raise DataError(f"{what} subjects repeat a subject: {', '.join(subjects)}")
    return subjects


def _fill_split(archives: Archives, subjects, views: list) -> Split:
    """Stack the recordings of `subjects`: raw pixel inputs of `views` and root-relative millimetre targets."""
    sources = [(subject, recording) for subject in subjects for recording in archives.recordings(subject)]
    total = sum(archives.frames(subject, recording) for subject, recording in sources)
    inputs = np.empty((total, len(views), skeleton.NUM_JOINTS, 2), dtype=np.float32)
    targets = np.empty((total, 1, skeleton.NUM_JOINTS, 3), dtype=np.float32)
    source_index = np.empty(total, dtype=np.int32)
    frame_index = np.empty(total, dtype=np.int32)
    start = 0
    for index, (subject, recording) in enumerate(sources):
        positions_mm = archives.positions_3d[subject][recording] * np.float32(1000)
        stop = start + len(positions_mm)
        targets[start:stop, 0] = positions_mm - positions_mm[:, :1]
        inputs[start:stop] = archives.positions_2d[subject][recording][:, views]
        source_index[start:stop] = index
        frame_index[start:stop] = np.arange(stop - start)
        start = stop
    return Split(inputs, targets, sources, source_index, frame_index)


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
    """(pixels - mean) / std on pixel inputs (N, V, J, 2), block by block, without a second copy."""
    for start in range(0, len(inputs), chunk):
        block = inputs[start:start + chunk]
        block -= normalization.mean
        block /= normalization.std


def prepare(data_3d, data_2d=None, train_subjects=skeleton.TRAIN_SUBJECTS,
            test_subjects=skeleton.TEST_SUBJECTS, val_subjects=(), normalization=None,
            keep_archives=False, views=None) -> Prepared:
    """Load (if given paths), validate and prepare archives exactly as the published pipeline does.

    `data_3d`, `data_2d`: paths of the two archives, or `data_3d` an :class:`Archives` already
    loaded. The statistics come from `train_subjects` only and apply to every split.
    `val_subjects` (taken out of training) give a held-out validation split. A given
    `normalization` (from a checkpoint) is applied instead of computing one. `views` (camera
    indices, default all) chooses the cameras of the inputs, in that order.
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
    views = list(range(archives.num_views)) if views is None else list(views)
    if not views or not all(0 <= view < archives.num_views for view in views) or len(set(views)) != len(views):
        raise DataError(f"views must be distinct camera indices 0..{archives.num_views - 1}, not {views}")
    for subject in wanted:
        if subject not in archives.positions_3d:
            raise DataError(f"{archives.path_3d}: subject {subject} is missing "
                            f"(found: {', '.join(archives.subjects) or 'nothing'})")
    train = _fill_split(archives, train_subjects, views)
    if normalization is None:
        normalization = _statistics(train.inputs)
    splits = [train, _fill_split(archives, test_subjects, views)]
    if val_subjects:
        splits.append(_fill_split(archives, val_subjects, views))
    for split in splits:
        normalize_in_place(split.inputs, normalization)
    return Prepared(train=splits[0], test=splits[1], normalization=normalization,
                    train_subjects=train_subjects, test_subjects=test_subjects,
                    val=splits[2] if val_subjects else None, val_subjects=val_subjects,
                    archives=archives if keep_archives or isinstance(data_3d, Archives) else None,
                    views=tuple(views), rig=archives.rig)
