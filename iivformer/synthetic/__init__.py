"""A synthetic Human3.6M in the VideoPose3D archive format (the real one is licensed).

Each subject gets seeded body proportions; each action is a small function that writes joint-angle
channels, wrist targets and a heading over time; forward kinematics turns them into the 32
Human3.6M joints, with the feet pinned to the floor; every recording is placed in the room so that all
joints project inside all 4 real cameras (or every camera of another rig, :mod:`iivformer.rig`), and the
2D detections get a detector-like error. A recording is drawn from its own seeded generator, so the same
preset and seed give the same bytes.

- :mod:`~iivformer.synthetic.seeds`: the seed check and one independent random stream per purpose.
- :mod:`~iivformer.synthetic.body`: body proportions, bone offsets, rotations, forward kinematics, arm IK.
- :mod:`~iivformer.synthetic.motion`: the channels, the motion helpers, channels -> joints, foot pinning.
- :mod:`~iivformer.synthetic.actions`: one motion function per action, and ACTION_MOTIONS.
- :mod:`~iivformer.synthetic.scene`: the room centre, image margins, placing a recording where all cameras see it.
- :mod:`~iivformer.synthetic.detector`: the detector-like 2D error and make_detections.
- this module: presets, recording lengths, make_recordings and writing the two archives (write_dataset).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from iivformer import skeleton
from iivformer.errors import IIVFormerError
from iivformer.archives import PAIR_KEY
from iivformer.files import atomic_write, sha256
from iivformer.synthetic.actions import ACTION_MOTIONS
from iivformer.synthetic.body import forward_kinematics, make_body
from iivformer.synthetic.detector import DEFAULT_DETECTOR_NOISE, check_detector_noise, make_detections
from iivformer.synthetic.motion import CHANNELS, OTHER, SIDES, animate
from iivformer.rig import RIG_KEY
from iivformer.synthetic.scene import place, rig_room_centre
from iivformer.synthetic.seeds import check_seed, tag

__all__ = ["ACTION_MOTIONS", "CHANNELS", "DEFAULT_DETECTOR_NOISE", "FPS", "METADATA", "OTHER", "PRESETS", "Preset",
           "SIDES", "forward_kinematics", "make_detections", "make_recordings", "recording_names", "write_dataset",
           "write_pair"]

FPS = skeleton.FPS
METADATA = {"layout_name": "h36m", "num_joints": skeleton.NUM_JOINTS, "keypoints_symmetry": skeleton.KEYPOINTS_SYMMETRY}


@dataclass(frozen=True)
class Preset:
    """Take lengths in frames; with totals set, lengths are rescaled to give those 3D frame counts."""

    name: str
    min_frames: int
    max_frames: int
    train_frames: int | None = None
    test_frames: int | None = None


# 'full' matches Human3.6M: 389,938 + 135,836 poses, i.e. 1,559,752 + 543,344 frames over 4 cameras.
PRESETS = {
    "tiny": Preset("tiny", 90, 110),
    "small": Preset("small", 400, 600),
    "full": Preset("full", 1000, 6000, 389_938, 135_836),
}


def recording_names(subject: str) -> list:
    """The recordings of a subject, named as in the archives: '<Action>' and '<Action> 1' (S11 has no
    'Directions')."""
    names = [name for action in skeleton.ACTIONS for name in (action, action + " 1")]
    return [name for name in names if not (subject == "S11" and name == "Directions")]


def _check(preset, seed) -> Preset:
    """The Preset named (or given); IIVFormerError for an unknown name or a bad seed."""
    check_seed(seed)
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise IIVFormerError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[preset]


def _recording_lengths(preset: Preset, seed: int) -> dict:
    """(subject, recording) -> frames; 'full' uses log-normal lengths rescaled to the split totals."""
    rng = np.random.default_rng([seed, tag("lengths", preset.name)])
    lengths = {}
    splits = ((skeleton.TRAIN_SUBJECTS, preset.train_frames), (skeleton.TEST_SUBJECTS, preset.test_frames))
    for split, total in splits:
        pairs = [(subject, name) for subject in split for name in recording_names(subject)]
        if total is None:
            values = rng.integers(preset.min_frames, preset.max_frames + 1, len(pairs))
        else:
            values = np.exp(rng.normal(np.log(2400), 0.45, len(pairs)))
            for _ in range(20):
                values = np.clip(values * total / values.sum(), preset.min_frames, preset.max_frames)
            values = np.round(values).astype(int)
            values[np.argmax(values)] += total - values.sum()
        lengths.update(zip(pairs, (int(v) for v in values)))
    return lengths


def make_recordings(preset="small", seed: int = 0, progress: bool = False, rig=None) -> dict:
    """positions_3d: subject -> recording -> float32 (frames, 32, 3), metres, world coordinates of
    Human3.6M (or of the `rig`, every subject in its capture volume)."""
    preset = _check(preset, seed)
    lengths = _recording_lengths(preset, seed)
    centre = None if rig is None else rig_room_centre(rig)
    recordings = {subject: {} for subject in skeleton.SUBJECTS}
    for subject, name in tqdm(lengths, desc="3D poses", unit="recording", disable=not progress):
        body = make_body(subject, seed)
        rng = np.random.default_rng([seed, tag("take", subject, name)])  # "take": the stream's fixed name
        t = np.arange(lengths[subject, name]) / FPS
        channels = ACTION_MOTIONS[skeleton.action_of(name)](t, rng)
        recordings[subject][name] = place(animate(channels, body), subject, rng, rig, centre).astype(np.float32)
    return recordings


class _Counting:
    """A write-only file wrapper that advances a progress bar by the bytes written."""

    def __init__(self, handle, bar):
        self.handle, self.bar = handle, bar

    def write(self, data):
        self.bar.update(len(data))
        return self.handle.write(data)


def _save_npz(path: str, members: dict, compress: bool, progress: bool) -> None:
    """np.savez(_compressed) with fixed zip timestamps (same content -> same bytes), written atomically."""
    name = os.path.basename(os.path.abspath(path))

    def write(temporary) -> None:
        with open(temporary, "xb") as raw, zipfile.ZipFile(raw, "w", allowZip64=True) as archive:
            for member_name, value in members.items():
                info = zipfile.ZipInfo(member_name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
                info.external_attr = 0o600 << 16
                with archive.open(info, "w", force_zip64=True) as member, tqdm(
                        desc=f"writing {name}", unit="B", unit_scale=True, leave=False,
                        disable=not progress or member_name != next(iter(members))) as bar:
                    np.lib.format.write_array(_Counting(member, bar), np.asanyarray(value), allow_pickle=True)

    atomic_write(path, write)


def write_dataset(out_dir, preset="small", seed: int = 0, detector_noise: float = DEFAULT_DETECTOR_NOISE,
                  progress: bool = True, compress: bool = True, rig=None) -> tuple:
    """Write data_3d_h36m.npz and data_2d_h36m_synthetic.npz to out_dir; returns both paths.

    The 2D archive's metadata holds the SHA-256 of the 3D archive it was made from, so that a pair
    broken by a run killed between the two writes is refused when loaded (see load_archives), and,
    for another `rig` than Human3.6M's, that rig (:data:`iivformer.rig.RIG_KEY`)."""
    _check(preset, seed)
    check_detector_noise(detector_noise)
    os.makedirs(out_dir, exist_ok=True)
    positions_3d = make_recordings(preset, seed, progress=progress, rig=rig)
    positions_2d = make_detections(positions_3d, seed, detector_noise, progress=progress, rig=rig)
    return write_pair(out_dir, positions_3d, positions_2d, rig, compress, progress, "synthetic")


def write_pair(out_dir, positions_3d: dict, positions_2d: dict, rig=None, compress: bool = True,
               progress: bool = False, detector: str = "synthetic") -> tuple:
    """Write the archive pair data_3d_h36m.npz and data_2d_h36m_<detector>.npz (3D first; the 2D
    names its 3D by SHA-256 and, when given, its rig); returns both paths."""
    path_3d = os.path.join(out_dir, "data_3d_h36m.npz")
    path_2d = os.path.join(out_dir, f"data_2d_h36m_{detector}.npz")
    _save_npz(path_3d, {"positions_3d": positions_3d}, compress, progress)
    metadata = {**METADATA, PAIR_KEY: sha256(path_3d)}
    if rig is not None:
        metadata[RIG_KEY] = rig.to_dict()
    _save_npz(path_2d, {"positions_2d": positions_2d, "metadata": metadata}, compress, progress)
    return path_3d, path_2d
