"""The synthetic people's bodies: proportions, bone offsets, rotations, forward kinematics, arm IK.

Each subject gets seeded body proportions: a kinematic skeleton of the 32 Human3.6M joints with
fixed bone offsets, so bone lengths are exactly constant. Axes: x forward, y to the person's left,
z up; metres.
"""
import numpy as np

from iivformer import skeleton
from iivformer.synthetic.seeds import tag


def joints_of_side(side: str, *parts: str) -> tuple:
    """32-joint indices of one side's joints: side "r" or "l", parts named as in skeleton.JOINT_NAMES_32
    without the side letter, e.g. joints_of_side("r", "Hip", "Knee") == (1, 2)."""
    return tuple(skeleton.JOINT_INDEX_32[side.upper() + part] for part in parts)


def _bone_lengths(rng) -> tuple:
    """Bone lengths {bone: metres} of a person 1.58 to 1.88 m tall, and the scale from the standard body to this one."""
    legs, torso, arms, width, head = rng.normal(1.0, [0.035, 0.035, 0.04, 0.06, 0.03])
    lengths = {"hip": .13 * width, "thigh": .44 * legs, "shin": .44 * legs, "ankle": .08, "spine": .23 * torso,
               "chest": .25 * torso, "neck": .11 * head, "head": .115 * head, "shoulder": .15 * width,
               "upper": .28 * arms, "fore": .25 * arms}
    standing = (lengths["ankle"] + lengths["shin"] + lengths["thigh"] + .01 + lengths["spine"] + lengths["chest"]
                + lengths["neck"] + lengths["head"] + .03)
    scale = rng.uniform(1.58, 1.88) / standing
    return {name: value * scale for name, value in lengths.items()}, scale


def make_body(subject: str, seed: int) -> dict:
    """A subject's body, seeded per subject: "offsets" (32, 3) bone offsets in the rest pose, "scale",
    "upper" and "fore" (arm bone lengths), "clearance" {foot joint: its height above the sole}."""
    rng = np.random.default_rng([seed, tag("body", subject)])
    lengths, scale = _bone_lengths(rng)
    joint = skeleton.JOINT_INDEX_32
    offsets, clearance = np.zeros((skeleton.NUM_JOINTS_32, 3)), {}
    for side, sign in (("r", -1), ("l", 1)):
        hip, knee, ankle, toe, toe_site = joints_of_side(side, "Hip", "Knee", "Foot", "ToeBase", "ToeSite")
        offsets[hip], offsets[knee] = [0, sign * lengths["hip"], 0], [0, 0, -lengths["thigh"]]
        offsets[ankle] = [0, 0, -lengths["shin"]]
        offsets[toe], offsets[toe_site] = [.13 * scale, 0, .02 * scale - lengths["ankle"]], [.05 * scale, 0, 0]
        clearance[ankle], clearance[toe], clearance[toe_site] = lengths["ankle"], .02 * scale, .02 * scale
    offsets[joint["SpineBase"]], offsets[joint["Spine"]] = [0, 0, .01 * scale], [0, 0, lengths["spine"]]
    chest = [0, 0, lengths["chest"]]
    offsets[joint["Thorax"]] = offsets[joint["LShoulderAnchor"]] = offsets[joint["RShoulderAnchor"]] = chest
    offsets[joint["Nose"]] = [.03 * scale, 0, lengths["neck"]]
    offsets[joint["Head"]] = [-.01 * scale, 0, lengths["head"]]
    for side, sign in (("l", 1), ("r", -1)):
        shoulder, elbow, wrist, thumb, thumb_site, wrist_end, wrist_end_site = joints_of_side(
            side, "Shoulder", "Elbow", "Wrist", "Thumb", "ThumbSite", "WristEnd", "WristEndSite")
        offsets[shoulder] = [0, sign * lengths["shoulder"], -.02 * scale]
        offsets[elbow], offsets[wrist] = [0, 0, -lengths["upper"]], [0, 0, -lengths["fore"]]
        offsets[thumb] = [.03 * scale, -sign * .01 * scale, -.04 * scale]
        offsets[thumb_site] = [.01 * scale, 0, -.03 * scale]
        offsets[wrist_end], offsets[wrist_end_site] = [0, 0, -.08 * scale], [0, 0, -.03 * scale]
    return {"offsets": offsets, "scale": scale, "upper": lengths["upper"], "fore": lengths["fore"],
            "clearance": clearance}


def rotation(axis: str, degrees) -> np.ndarray:
    """Rotation matrices (..., 3, 3) about a body axis by angles in degrees."""
    a = np.radians(np.asarray(degrees, dtype=np.float64))
    i, j, k = {"x": (1, 2, 0), "y": (2, 0, 1), "z": (0, 1, 2)}[axis]
    r = np.zeros(a.shape + (3, 3))
    r[..., k, k] = 1
    r[..., i, i] = r[..., j, j] = np.cos(a)
    r[..., i, j], r[..., j, i] = -np.sin(a), np.sin(a)
    return r


def forward_kinematics(offsets: np.ndarray, local: dict, root_rotation: np.ndarray) -> np.ndarray:
    """Positions (F, 32, 3) of the 32 joints, root at the origin, from local rotations {joint: (F, 3, 3)}."""
    frames = len(root_rotation)
    world, positions = [None] * skeleton.NUM_JOINTS_32, np.zeros((frames, skeleton.NUM_JOINTS_32, 3))
    for joint, parent in enumerate(skeleton.PARENTS_32):
        if parent < 0:
            world[joint] = root_rotation
            continue
        positions[:, joint] = positions[:, parent] + world[parent] @ offsets[joint]
        world[joint] = world[parent] @ local[joint] if joint in local else world[parent]
    return positions


def arm_ik(shoulder, target, bias, upper, fore):
    """Shoulder and elbow rotations that put the wrist on target (chest frame). The elbow goes to the
    low side of its circle, backward when the hand hangs, outward when it is raised, plus bias."""
    d = target - shoulder
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    n = d / np.maximum(dist, 1e-9)
    dist = np.clip(dist, abs(upper - fore) + 0.05, 0.995 * (upper + fore))
    along = (upper ** 2 - fore ** 2 + dist ** 2) / (2 * dist)
    low, high = np.maximum(-n[:, 2:], 0) ** 2, np.maximum(n[:, 2:], 0) ** 2
    pole = np.concatenate([-1.5 * low, np.sign(shoulder[1]) * (0.2 + 1.5 * high), -np.ones_like(low)], -1) + bias
    p = pole - np.sum(pole * n, -1, keepdims=True) * n
    p /= np.linalg.norm(p, axis=-1, keepdims=True)
    elbow = shoulder + along * n + np.sqrt(np.maximum(upper ** 2 - along ** 2, 0)) * p
    u = (elbow - shoulder) / upper
    f = (shoulder + dist * n - elbow) / fore
    x = f - np.sum(f * u, -1, keepdims=True) * u
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    z = -u
    shoulder_rotation = np.stack([x, np.cross(z, x), z], axis=-1)
    bend = np.degrees(np.arctan2(np.sum(f * x, -1), np.sum(f * u, -1)))
    return shoulder_rotation, rotation("y", -bend)
