"""The Human3.6M skeletons: the 32-joint motion-capture tree and the 17 joints the model uses.

The facts come from ``resources/h36m_skeleton.json`` (VideoPose3D conventions): which joints are
kept, their parents, names, left/right symmetry, the subjects and the 15 actions.
"""
import json
from functools import lru_cache
from importlib import resources

import numpy as np


@lru_cache(maxsize=None)
def _facts() -> dict:
    with resources.files("iivformer").joinpath("resources/h36m_skeleton.json").open() as handle:
        return json.load(handle)


_FACTS = _facts()

PARENTS_32: tuple = tuple(_FACTS["parents_32"])
KEPT_32_TO_17: tuple = tuple(_FACTS["kept_32_to_17"])
PARENTS_17: tuple = tuple(_FACTS["parents_17"])
JOINT_NAMES: tuple = tuple(_FACTS["names_17"])
LEFT_JOINTS: tuple = tuple(_FACTS["keypoints_symmetry_17"][0])
RIGHT_JOINTS: tuple = tuple(_FACTS["keypoints_symmetry_17"][1])
KEYPOINTS_SYMMETRY: list = [list(LEFT_JOINTS), list(RIGHT_JOINTS)]
FPS: int = _FACTS["fps"]
NUM_JOINTS: int = len(JOINT_NAMES)
NUM_VIEWS: int = 4

# Names of the 32 motion-capture joints in index order. The 17 kept joints carry their 17-joint names
# (so JOINT_INDEX_32[name] == KEPT_32_TO_17[JOINT_INDEX[name]]); RFoot and LFoot are the ankles, and a
# "Site" is the end point of a chain (the tip of the toes, of the thumb, of the hand).
JOINT_NAMES_32: tuple = (
    "Hip",
    "RHip", "RKnee", "RFoot", "RToeBase", "RToeSite",
    "LHip", "LKnee", "LFoot", "LToeBase", "LToeSite",
    "SpineBase", "Spine", "Thorax", "Nose", "Head",
    "LShoulderAnchor", "LShoulder", "LElbow", "LWrist", "LThumb", "LThumbSite", "LWristEnd", "LWristEndSite",
    "RShoulderAnchor", "RShoulder", "RElbow", "RWrist", "RThumb", "RThumbSite", "RWristEnd", "RWristEndSite",
)
NUM_JOINTS_32: int = len(PARENTS_32)
JOINT_INDEX_32: dict = {name: index for index, name in enumerate(JOINT_NAMES_32)}  # "RKnee" -> 2
JOINT_INDEX: dict = {name: index for index, name in enumerate(JOINT_NAMES)}  # 17 joints: "RKnee" -> 2

TRAIN_SUBJECTS: tuple = tuple(_FACTS["subjects"]["train"])
TEST_SUBJECTS: tuple = tuple(_FACTS["subjects"]["test"])
SUBJECTS: tuple = TRAIN_SUBJECTS + TEST_SUBJECTS
ACTIONS: tuple = tuple(_FACTS["actions"])

# Human3.6M names two actions differently for S1 in the VideoPose3D archives.
ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}

# Bones of the 17-joint skeleton as (child, parent) pairs, in joint order.
BONES: tuple = tuple((child, parent) for child, parent in enumerate(PARENTS_17) if parent >= 0)


def action_of(key: str) -> str:
    """The action an archive key belongs to: the text before the first space ('Walking 1' -> 'Walking')."""
    name = key.split(" ")[0]
    return ACTION_ALIASES.get(name, name)


def to_17_joints(positions_32: np.ndarray) -> np.ndarray:
    """Keep the 17 joints the model uses from (..., 32, C) motion-capture positions."""
    return positions_32[..., list(KEPT_32_TO_17), :]


def joint_side(joint: int) -> str:
    """'left', 'right' or 'centre' for a 17-joint index (used to colour skeletons)."""
    if joint in LEFT_JOINTS:
        return "left"
    if joint in RIGHT_JOINTS:
        return "right"
    return "centre"


def bone_lengths(positions: np.ndarray, parents=PARENTS_17) -> np.ndarray:
    """Length of every bone, shape (..., J-1), for positions (..., J, 3) and a parent list."""
    children = [child for child, parent in enumerate(parents) if parent >= 0]
    parent_index = [parents[child] for child in children]
    return np.linalg.norm(positions[..., children, :] - positions[..., parent_index, :], axis=-1)
