"""Small VideoPose3D-format archives for tests, valid or deliberately broken."""
import numpy as np

from iivformer import skeleton

SUBJECTS = skeleton.TRAIN_SUBJECTS + skeleton.TEST_SUBJECTS
KEYS = ("Walking", "Walking 1", "Sitting 1")


def positions(seed: int = 0, frames: int = 12, extra_2d: int = 2):
    """(positions_3d, positions_2d) dictionaries with random but valid contents."""
    rng = np.random.default_rng(seed)
    positions_3d, positions_2d = {}, {}
    for subject in SUBJECTS:
        positions_3d[subject], positions_2d[subject] = {}, {}
        for key in KEYS:
            count = frames + int(rng.integers(0, 4))
            positions_3d[subject][key] = (rng.normal(0, 0.4, (count, 32, 3)) + [0, 0, 1]).astype(np.float32)
            positions_2d[subject][key] = [
                rng.uniform(100, 900, (count + extra_2d, 17, 2)).astype(np.float32) for _ in range(4)]
    return positions_3d, positions_2d


METADATA = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": skeleton.KEYPOINTS_SYMMETRY}


def write(folder, positions_3d, positions_2d, metadata=METADATA, name_2d="data_2d_h36m_test.npz"):
    """Write the pair the way VideoPose3D does (np.savez_compressed of pickled dicts)."""
    path_3d, path_2d = folder / "data_3d_h36m.npz", folder / name_2d
    np.savez_compressed(path_3d, positions_3d=positions_3d)
    extra = {} if metadata is None else {"metadata": metadata}
    np.savez_compressed(path_2d, positions_2d=positions_2d, **extra)
    return path_3d, path_2d


class RunsCode:
    """Unpickling this object runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))
