"""Where a recording happens: in the part of the room that all the cameras see, with their lens distortion.

Every recording is turned and moved about the vertical so that all its joints project at least
MARGIN_PX pixels inside every image of the subject's cameras (Human3.6M's 4, or a rig's).
"""
from functools import lru_cache

import numpy as np

from iivformer import cameras, skeleton
from iivformer.synthetic.body import rotation

MARGIN_PX = 15.0  # every joint stays at least this far inside every image


@lru_cache(maxsize=None)
def room_centre(subject: str) -> np.ndarray:
    """Middle of the floor area where a standing person is seen whole by all 4 cameras of the subject."""
    axis = np.arange(-2.0, 3.01, 0.1)
    return _seen_centre(cameras.cameras_for(subject), axis, axis)


def rig_room_centre(rig) -> np.ndarray:
    """Middle of the floor area (metres) where a standing person is seen whole by every camera of a
    rig, searched within 3 m of the floor point below where the cameras look."""
    middle, axis = rig.floor_centre()[:2] / 1000.0, np.arange(-3.0, 3.01, 0.1)
    return _seen_centre(rig.cameras, middle[0] + axis, middle[1] + axis)


def _seen_centre(cams, xs, ys) -> np.ndarray:
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 1, 2)
    corners = np.array([[x, y, z] for x in (-0.3, 0.3) for y in (-0.3, 0.3) for z in (0.0, 1.9)])
    points = np.concatenate([grid + corners[:, :2], np.broadcast_to(corners[:, 2:], (len(grid), 8, 1))], -1)
    inside = image_margin(points, cams, axis=1) >= 2 * MARGIN_PX
    return grid[inside, 0].mean(0) if inside.any() else np.array([np.mean(xs), np.mean(ys)])


def image_margin(points, cams, axis=None):
    """Smallest distance (px) of projected points (metres) to the image border, over cameras."""
    worst = []
    for cam in cams:
        uv = cameras.project(points * 1000.0, cam)
        edge = np.minimum(np.minimum(uv[..., 0], cam.res_w - uv[..., 0]),
                          np.minimum(uv[..., 1], cam.res_h - uv[..., 1]))
        worst.append(edge.min() if axis is None else edge.min(axis=axis))
    return np.min(worst, axis=0)


def place(positions, subject, rng, rig=None, centre=None) -> np.ndarray:
    """Turn and move a recording (F, J, 3) about the vertical so every joint projects inside every image
    of the subject's cameras (or the `rig`'s, whose :func:`rig_room_centre` is `centre`).

    The recording's middle goes to the room centre plus a random offset; the first of eight headings
    (and, failing those, smaller offsets) that keeps MARGIN_PX everywhere wins, else the best one."""
    cams = cameras.cameras_for(subject, rig)
    centre = room_centre(subject) if centre is None else centre
    root = skeleton.JOINT_INDEX_32["Hip"]
    middle = (positions[:, root, :2].min(0) + positions[:, root, :2].max(0)) / 2
    offset, best = rng.uniform(-0.6, 0.6, 2), (-np.inf, None)
    for shrink in (1.0, 0.5, 0.0):
        for turn in (0, 90, 180, 270, 45, 135, 225, 315):
            turning = rotation("z", turn)[:2, :2]
            moved = positions.copy()
            moved[..., :2] = (positions[..., :2] - middle) @ turning.T + centre + shrink * offset
            margin = image_margin(moved, cams)
            if margin >= MARGIN_PX:
                return moved
            best = max(best, (margin, moved), key=lambda item: item[0])
    return best[1]
