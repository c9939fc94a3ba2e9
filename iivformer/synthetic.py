"""A synthetic Human3.6M in the VideoPose3D archive format (the real one is licensed).

Each subject gets seeded body proportions (a kinematic skeleton with fixed bone offsets, so bone
lengths are exactly constant). Each action is a small function that writes joint-angle channels
(degrees), wrist targets (metres, in the chest frame, relative to the thorax; turned into shoulder
and elbow rotations by two-bone IK) and a heading over time; :func:`forward_kinematics` turns them
into the 32 Human3.6M joints. The feet are pinned to the floor: the root follows whichever foot
carries the weight, so walking travels and standing people do not slide. Every take is placed in
the room so that all joints project inside all 4 real cameras (with their lens distortion).
Everything is vectorised over frames; a take is drawn from its own seeded generator.
"""
from __future__ import annotations

import os
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from tqdm.auto import tqdm

from iivformer import cameras, skeleton
from iivformer.errors import IIVFormerError

FPS = skeleton.FPS
DEFAULT_DETECTOR_NOISE = 3.0  # px, standard deviation per coordinate (x2 at wrists and ankles)
METADATA = {"layout_name": "h36m", "num_joints": 17, "keypoints_symmetry": skeleton.KEYPOINTS_SYMMETRY}
_MARGIN_PX = 15.0  # every joint stays at least this far inside every image
_FOOT = {"r": (3, 4, 5), "l": (8, 9, 10)}  # ankle, toe base, toe site


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


def take_keys(subject: str) -> list:
    """Archive keys of a subject: '<Action>' and '<Action> 1' (S11 has no 'Directions')."""
    keys = [name for action in skeleton.ACTIONS for name in (action, action + " 1")]
    return [key for key in keys if not (subject == "S11" and key == "Directions")]


def _tag(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _check_seed(seed) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise IIVFormerError(f"seed must be a non-negative integer, got {seed!r}")


def _check(preset, seed) -> Preset:
    _check_seed(seed)
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise IIVFormerError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[preset]


def _take_lengths(preset: Preset, seed: int) -> dict:
    """(subject, key) -> frames; 'full' uses log-normal lengths rescaled to the split totals."""
    rng = np.random.default_rng([seed, _tag("lengths", preset.name)])
    lengths = {}
    splits = ((skeleton.TRAIN_SUBJECTS, preset.train_frames), (skeleton.TEST_SUBJECTS, preset.test_frames))
    for split, total in splits:
        keys = [(subject, key) for subject in split for key in take_keys(subject)]
        if total is None:
            values = rng.integers(preset.min_frames, preset.max_frames + 1, len(keys))
        else:
            values = np.exp(rng.normal(np.log(2400), 0.45, len(keys)))
            for _ in range(20):
                values = np.clip(values * total / values.sum(), preset.min_frames, preset.max_frames)
            values = np.round(values).astype(int)
            values[np.argmax(values)] += total - values.sum()
        lengths.update(zip(keys, (int(v) for v in values)))
    return lengths


# ----------------------------------------------------------------------------------- the body
def _body(subject: str, seed: int) -> dict:
    """Bone offsets (32, 3) in the rest pose (x forward, y left, z up; metres), seeded per subject."""
    rng = np.random.default_rng([seed, _tag("body", subject)])
    legs, torso, arms, width, head = rng.normal(1.0, [0.035, 0.035, 0.04, 0.06, 0.03])
    s = {"hip": .13 * width, "thigh": .44 * legs, "shin": .44 * legs, "ankle": .08, "spine": .23 * torso,
         "chest": .25 * torso, "neck": .11 * head, "head": .115 * head, "shoulder": .15 * width,
         "upper": .28 * arms, "fore": .25 * arms}
    standing = s["ankle"] + s["shin"] + s["thigh"] + .01 + s["spine"] + s["chest"] + s["neck"] + s["head"] + .03
    scale = rng.uniform(1.58, 1.88) / standing
    s = {name: value * scale for name, value in s.items()}
    o = np.zeros((32, 3))
    for sign, (hip, knee, ankle, toe, site) in ((-1, (1, 2, 3, 4, 5)), (1, (6, 7, 8, 9, 10))):
        o[hip], o[knee], o[ankle] = [0, sign * s["hip"], 0], [0, 0, -s["thigh"]], [0, 0, -s["shin"]]
        o[toe], o[site] = [.13 * scale, 0, .02 * scale - s["ankle"]], [.05 * scale, 0, 0]
    o[11], o[12] = [0, 0, .01 * scale], [0, 0, s["spine"]]
    o[13] = o[16] = o[24] = [0, 0, s["chest"]]
    o[14], o[15] = [.03 * scale, 0, s["neck"]], [-.01 * scale, 0, s["head"]]
    for sign, (shoulder, elbow, wrist, thumb, tip, hand, end) in ((1, range(17, 24)), (-1, range(25, 32))):
        o[shoulder] = [0, sign * s["shoulder"], -.02 * scale]
        o[elbow], o[wrist] = [0, 0, -s["upper"]], [0, 0, -s["fore"]]
        o[thumb], o[tip] = [.03 * scale, -sign * .01 * scale, -.04 * scale], [.01 * scale, 0, -.03 * scale]
        o[hand], o[end] = [0, 0, -.08 * scale], [0, 0, -.03 * scale]
    clearance = {3: s["ankle"], 8: s["ankle"], 4: .02 * scale, 9: .02 * scale, 5: .02 * scale, 10: .02 * scale}
    return {"offsets": o, "scale": scale, "upper": s["upper"], "fore": s["fore"], "clearance": clearance}


def _rot(axis: str, degrees) -> np.ndarray:
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
    world, positions = [None] * 32, np.zeros((frames, 32, 3))
    for joint, parent in enumerate(skeleton.PARENTS_32):
        if parent < 0:
            world[joint] = root_rotation
            continue
        positions[:, joint] = positions[:, parent] + world[parent] @ offsets[joint]
        world[joint] = world[parent] @ local[joint] if joint in local else world[parent]
    return positions


def _arm_ik(shoulder, target, bias, upper, fore):
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
    return shoulder_rotation, _rot("y", -bend)


# --------------------------------------------------------------------------- motion helpers
CHANNELS = ("yaw", "lean", "roll", "twist", "spine_pitch", "spine_yaw", "spine_roll", "neck_pitch", "neck_yaw",
            "hip_r", "hip_l", "abd_r", "abd_l", "knee_r", "knee_l", "foot_r", "foot_l")
SIDES = {"r": -1.0, "l": 1.0}  # sign of the person's-left axis for each side
OTHER = {"r": "l", "l": "r"}


def _at(side, forward, lateral, up):
    """A wrist target relative to the thorax (standard body): lateral > 0 is toward that side."""
    return np.array([forward, SIDES[side] * lateral, up])


def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _wobble(t, rng, amplitude, frequency, shape=()):
    """Smooth random signal (F, *shape): three sinusoids of random frequency and phase."""
    f = frequency * rng.uniform(0.5, 1.5, (3,) + shape)
    phase = rng.uniform(0, 2 * np.pi, (3,) + shape)
    wave = sum(np.sin(2 * np.pi * f[i] * t.reshape((-1,) + (1,) * len(shape)) + phase[i]) for i in range(3))
    return amplitude * wave / np.sqrt(1.5)


def _episodes(t, rng, on, off, ramp=0.5, start_on=False):
    """Smooth on/off boxes (F, K) for episodes lasting U(on) seconds with U(off) gaps; and their spans."""
    spans, x = [], (-rng.uniform(0, on[0]) if start_on else rng.uniform(-on[0], off[0]))
    while x < t[-1]:
        end = x + rng.uniform(*on)
        spans.append((x, end))
        x = end + rng.uniform(*off)
    spans = np.array(spans).reshape(-1, 2)
    w = _smooth((t[:, None] - spans[:, 0]) / ramp) * _smooth((spans[:, 1] - t[:, None]) / ramp)
    return w, spans


def _blend(rest, weights, values):
    """Blend a rest value with one value per episode: rest (F, D) or (D,), weights (F, K), values (K, D)."""
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), (weights.shape[1], np.shape(rest)[-1]))
    return rest * (1 - weights.sum(1, keepdims=True)) + weights @ values


def _move_hand(P, side, weights, values, rest=None):
    """Blend a wrist target toward one target per episode; on the way the hand swings out in front
    of the body, so that it never passes through the shoulder (which would flip the elbow)."""
    rest = P["hand_" + side] if rest is None else rest
    swing = (4 * weights * (1 - weights)).sum(1, keepdims=True) * _at(side, 0.2, 0.1, 0.0)
    P["hand_" + side] = _blend(rest, weights, values) + swing


def _turns(t, spans, degrees):
    """Heading that turns by the given degrees over each episode span."""
    progress = _smooth((t[:, None] - spans[:, 0]) / (spans[:, 1] - spans[:, 0]))
    return progress @ np.asarray(degrees, dtype=np.float64)


def _bump(phase, power):
    return ((1 + np.cos(phase)) / 2) ** power


def _shift_weight(P, t, rng, degrees, frequency):
    """Sway the pelvis sideways over the (planted) feet."""
    shift = _wobble(t, rng, degrees, frequency)
    P["abd_r"] += shift
    P["abd_l"] -= shift
    P["roll"] += shift / 2


def _spots(rng, count, side, forward, lateral, up):
    """Random wrist targets in boxes given as (low, high) ranges, mirrored for the side."""
    lateral = SIDES[side] * rng.uniform(*lateral, count)
    return np.stack([rng.uniform(*forward, count), lateral, rng.uniform(*up, count)], -1)


def _neutral(t, rng):
    """Standing quietly: slight knee bend, feet apart, arms hanging, breathing and sway."""
    frames = len(t)
    P = {name: np.zeros(frames) for name in CHANNELS}
    P["yaw"] += rng.uniform(0, 360)
    stance = rng.uniform(2, 6)
    P["abd_r"] += stance
    P["abd_l"] += stance
    for side in "rl":
        P["knee_" + side] += 4 + _wobble(t, rng, 1.5, 0.2)
        P["hip_" + side] += 2
        P["hand_" + side] = np.tile(_at(side, 0.03, 0.17, -0.54), (frames, 1)) + _wobble(t, rng, 0.01, 0.2, (3,))
        P["pole_" + side] = np.zeros(3)  # bias of the elbow direction (see _arm_ik)
    _shift_weight(P, t, rng, 2.0, 0.1)
    P["spine_pitch"] += 3 + _wobble(t, rng, 1.5, 0.25)
    P["spine_yaw"] += _wobble(t, rng, 3, 0.1)
    P["neck_yaw"] += _wobble(t, rng, 8, 0.1)
    P["neck_pitch"] += 5 + _wobble(t, rng, 4, 0.15)
    return P


def _gait(P, t, rng, envelope, frequency, stride=1.0, swing=(1.0, 1.0)):
    """Add a walking cycle (legs, pelvis, arm swing) scaled by envelope (F,) at frequency (F,) strides/s."""
    phase = 2 * np.pi * np.cumsum(frequency * np.ones_like(t)) / FPS + rng.uniform(0, 2 * np.pi)
    for side, leg, arm_amount in (("r", phase, swing[0]), ("l", phase + np.pi, swing[1])):
        since_strike = (leg - np.pi / 2) % (2 * np.pi)  # the heel strikes at leg = pi/2
        stance = since_strike < np.pi  # the thigh swings back steadily until the other heel strikes
        thigh = np.where(stance, 1 - 2 * since_strike / np.pi, -np.cos(since_strike - np.pi))
        P["hip_" + side] += envelope * stride * (2 + 22 * thigh)
        P["knee_" + side] += envelope * (60 * stride * _bump(leg + 0.16, 4) + 5 * _bump(leg - np.pi / 2 - 0.7, 4))
        P["foot_" + side] += envelope * stride * (10 * _bump(leg - np.pi / 2, 4) - 25 * _bump(leg + 0.25 * np.pi, 6))
        angle = envelope * arm_amount * 20 * np.sin(leg + np.pi)
        shoulder = _at(side, 0, 0.15, -0.02)
        P["hand_" + side] = shoulder + np.einsum("fij,fj->fi", _rot("y", -angle), P["hand_" + side] - shoulder)
    P["twist"] += envelope * 4 * np.sin(phase)
    P["spine_yaw"] -= envelope * 7 * np.sin(phase)
    P["lean"] += envelope * 4
    P["roll"] += envelope * 2 * np.sin(2 * phase)


def _sit(P, amount, rng):
    """Blend toward sitting on a chair (thighs horizontal, shins vertical) by amount (F,) in 0..1."""
    hip, knee, apart = rng.uniform(85, 95), rng.uniform(85, 100), rng.uniform(4, 12)
    for side in "rl":
        P["hip_" + side] += amount * hip
        P["knee_" + side] += amount * knee
        P["abd_" + side] += amount * apart
    P["lean"] -= amount * rng.uniform(0, 8)


def _steps(P, t, rng, on, off, stride, turn):
    """Occasional bouts of a few steps, turning during each bout: by up to +-turn degrees while near
    the starting point, back towards it (estimated by dead reckoning) once more than 0.5 m away."""
    weights, spans = _episodes(t, rng, on, off, ramp=0.6)
    frequency = rng.uniform(0.8, 1.0)
    _gait(P, t, rng, weights.sum(1), frequency, stride=stride)
    heading, where, turns = np.radians(P["yaw"][0]), np.zeros(2), []
    for start, end in spans:
        if np.linalg.norm(where) > 0.5:
            back = np.arctan2(-where[1], -where[0]) - heading
            turns.append(np.degrees(np.angle(np.exp(1j * back))) + rng.normal(0, 20))
        else:
            turns.append(rng.uniform(-turn, turn))
        middle = heading + np.radians(turns[-1]) / 2
        walked = 1.1 * stride * frequency * max(end - start - 0.6, 0)  # metres, roughly
        where = where + walked * np.array([np.cos(middle), np.sin(middle)])
        heading += np.radians(turns[-1])
    P["yaw"] += _turns(t, spans, turns)


# ---------------------------------------------------------------------------------- actions
def _walking(t, rng, kind="Walking"):
    P = _neutral(t, rng)
    frequency = rng.uniform(0.95, 1.05) + _wobble(t, rng, 0.02, 0.1)
    envelope, stride, swing = np.ones_like(t), 1.0, (1.0, 1.0)
    leash = rng.choice(["r", "l"])
    if kind == "WalkDog":  # the dog sets the pace: speed changes and stops
        frequency = frequency + _wobble(t, rng, 0.05, 0.15)
        stops, _ = _episodes(t, rng, (0.8, 2.0), (3.0, 8.0), ramp=0.6)
        envelope = 1 - 0.9 * stops.sum(1)
        swing = (0.1, 1.0) if leash == "r" else (1.0, 0.1)
        P["hand_" + leash] = _at(leash, 0.3, 0.08, -0.42) + _wobble(t, rng, 0.03, 1.2, (3,))
    elif kind == "WalkTogether":  # slower, talking to a companion at one side
        frequency, stride, swing = frequency * 0.82, 0.85, (0.6, 0.6)
        looks, _ = _episodes(t, rng, (1.0, 3.0), (1.0, 4.0), start_on=True)
        P["neck_yaw"] += looks.sum(1) * rng.choice([-1, 1]) * rng.uniform(30, 50)
    _gait(P, t, rng, envelope, frequency, stride=stride, swing=swing)
    P["loop"] = (rng.uniform(0.3, 1.0), rng.uniform(0.5, 0.8), rng.choice([-1.0, 1.0]), rng.uniform(0, 4))
    return P


def _directions(t, rng):
    P = _neutral(t, rng)
    weights, _ = _episodes(t, rng, (1.5, 3.5), (0.8, 3.0), ramp=0.5, start_on=rng.random() < 0.5)
    sides = rng.choice(["r", "l"], weights.shape[1])
    azimuth, elevation = rng.uniform(-20, 70, len(sides)), rng.uniform(-15, 25, len(sides))
    for side in "rl":
        mine = weights * (sides == side)
        a, e = np.radians(azimuth), np.radians(elevation)
        way = np.stack([np.cos(a) * np.cos(e), SIDES[side] * np.sin(a) * np.cos(e), np.sin(e)], -1)
        point = _at(side, 0, 0.15, -0.02) + 0.52 * way
        _move_hand(P, side, mine, point)
        P["neck_yaw"] += mine @ (SIDES[side] * azimuth * 0.6)
    _steps(P, t, rng, (1.0, 2.5), (2.0, 5.0), stride=0.35, turn=90)
    return P


def _discussion(t, rng):
    P = _neutral(t, rng)
    _shift_weight(P, t, rng, 4, 0.15)
    P["spine_yaw"] += _wobble(t, rng, 10, 0.1)
    for side in "rl":
        weights, _ = _episodes(t, rng, (1.0, 4.0), (0.5, 3.0))
        _move_hand(P, side, weights, _spots(rng, weights.shape[1], side, (0.2, 0.35), (-0.05, 0.25), (-0.3, 0.05)))
        P["hand_" + side] += weights.sum(1, keepdims=True) * _wobble(t, rng, 0.04, 1.5, (3,))
    _steps(P, t, rng, (1.0, 2.0), (4.0, 10.0), stride=0.3, turn=40)
    return P


def _hand_to_mouth(t, rng, P, side, on, off, rest):
    weights, _ = _episodes(t, rng, on, off, ramp=0.45)
    _move_hand(P, side, weights, _at(side, 0.15, 0.02, 0.04), rest)
    P["neck_pitch"] += 8 * weights.sum(1)


def _eating(t, rng):
    P = _neutral(t, rng)
    _sit(P, np.ones_like(t), rng)
    side = "r" if rng.random() < 0.75 else "l"
    on_table = _at(side, 0.32, 0.12, -0.28) + _wobble(t, rng, 0.03, 0.3, (3,))
    _hand_to_mouth(t, rng, P, side, (0.9, 1.8), (1.0, 3.5), on_table)
    P["hand_" + OTHER[side]] = _at(OTHER[side], 0.3, 0.14, -0.32) + _wobble(t, rng, 0.03, 0.3, (3,))
    P["spine_pitch"] += 8
    return P


def _smoking(t, rng):
    P = _neutral(t, rng)
    side = "r" if rng.random() < 0.7 else "l"
    held = _at(side, 0.2, 0.16, -0.32) + _wobble(t, rng, 0.02, 0.3, (3,))
    _hand_to_mouth(t, rng, P, side, (1.2, 2.5), (2.5, 6.0), held)
    _shift_weight(P, t, rng, 4, 0.08)
    _steps(P, t, rng, (1.0, 2.0), (5.0, 12.0), stride=0.3, turn=60)
    return P


def _phoning(t, rng):
    P = _neutral(t, rng)
    side = "r" if rng.random() < 0.7 else "l"
    calls, _ = _episodes(t, rng, (4.0, 12.0), (1.0, 3.0), ramp=0.7, start_on=True)
    _move_hand(P, side, calls, _at(side, 0.05, 0.07, 0.02))
    P["pole_" + side] = np.array([0.5, 0.0, 0.0])  # elbow forward
    P["neck_yaw"] -= 10 * SIDES[side] * calls.sum(1)
    talk, _ = _episodes(t, rng, (1.0, 3.0), (1.0, 4.0))
    _move_hand(P, OTHER[side], talk, _spots(rng, talk.shape[1], OTHER[side], (0.2, 0.35), (0.05, 0.2), (-0.3, -0.1)))
    _steps(P, t, rng, (1.5, 3.0), (3.0, 8.0), stride=0.5, turn=120)
    return P


def _greeting(t, rng):
    P = _neutral(t, rng)
    side = "r" if rng.random() < 0.8 else "l"
    waves, _ = _episodes(t, rng, (1.2, 2.5), (0.8, 2.5), start_on=rng.random() < 0.5)
    shake = (rng.random(waves.shape[1]) < 0.3).astype(float)  # shake hands instead of waving
    _move_hand(P, side, waves * (1 - shake), _at(side, 0.12, 0.25, 0.32))
    _move_hand(P, side, waves * shake, _at(side, 0.38, 0.05, -0.3))
    waving, shaking = waves @ (1 - shake), waves @ shake
    P["hand_" + side] += np.outer(waving * np.sin(2 * np.pi * rng.uniform(2, 3) * t), _at(side, 0, 0.09, 0.02))
    P["hand_" + side] += np.outer(shaking * np.sin(2 * np.pi * rng.uniform(2, 3) * t), [0, 0, 0.04])
    P["spine_pitch"] += 12 * shaking
    _steps(P, t, rng, (1.0, 2.0), (2.0, 5.0), stride=0.5, turn=60)
    return P


def _photo(t, rng):
    P = _neutral(t, rng)
    shots, _ = _episodes(t, rng, (1.5, 5.0), (1.0, 3.0), start_on=rng.random() < 0.5)
    crouch = (shots * (rng.random(shots.shape[1]) < 0.3)).sum(1) * rng.uniform(30, 60)
    for side in "rl":
        held = _at(side, 0.22, 0.08, -0.22)
        _move_hand(P, side, shots, _at(side, 0.22, 0.08, 0.08), held)
        P["hip_" + side] += crouch / 2
        P["knee_" + side] += crouch
    P["neck_pitch"] -= 5 * shots.sum(1)
    _steps(P, t, rng, (1.0, 2.0), (2.0, 4.0), stride=0.4, turn=70)
    return P


_POSES = (  # (right wrist, left wrist) targets of a few poses people strike
    (_at("r", 0.0, 0.62, 0.1), _at("l", 0.0, 0.62, 0.1)),  # arms spread out
    (_at("r", 0.0, 0.25, -0.38), _at("l", 0.0, 0.25, -0.38)),  # hands on hips
    (_at("r", 0.1, 0.25, 0.45), _at("l", 0.03, 0.17, -0.54)),  # right arm up
    (_at("r", 0.03, 0.17, -0.54), _at("l", 0.1, 0.25, 0.45)),  # left arm up
    (_at("r", -0.05, 0.1, 0.22), _at("l", -0.05, 0.1, 0.22)),  # hands behind the head
    (_at("r", 0.2, -0.1, -0.15), _at("l", 0.2, -0.1, -0.15)),  # arms crossed
)


def _posing(t, rng):
    P = _neutral(t, rng)
    poses, _ = _episodes(t, rng, (2.0, 4.5), (0.6, 1.5), ramp=0.8, start_on=True)
    chosen = rng.integers(0, len(_POSES), poses.shape[1])
    for i, side in enumerate("rl"):
        _move_hand(P, side, poses, np.array([_POSES[c][i] for c in chosen]).reshape(-1, 3))
    for channel, spread in (("spine_yaw", 25), ("spine_roll", 10), ("lean", 8), ("neck_yaw", 30), ("abd_r", 8)):
        P[channel] += poses @ rng.uniform(-spread, spread, poses.shape[1])
    return P


def _purchases(t, rng):
    P = _neutral(t, rng)
    picks, _ = _episodes(t, rng, (1.5, 3.0), (1.5, 4.0), ramp=0.7)
    bend, knees = picks @ rng.uniform(35, 60, picks.shape[1]), picks @ rng.uniform(15, 45, picks.shape[1])
    P["lean"] += bend
    P["spine_pitch"] += bend / 3
    P["neck_pitch"] -= bend / 3
    both = rng.random(picks.shape[1]) < 0.4
    for side, uses in (("r", both | (rng.random(picks.shape[1]) < 0.6)), ("l", both)):
        P["hip_" + side] += knees / 2
        P["knee_" + side] += knees
        reach = _at(side, 0.4, 0.1, -0.42)
        _move_hand(P, side, picks * uses, reach)
    _steps(P, t, rng, (1.5, 3.0), (2.0, 4.0), stride=0.6, turn=90)
    return P


def _sitting(t, rng, down=False):
    P = _neutral(t, rng)
    seated = np.ones_like(t)
    if down:  # stand up and sit down again and again
        weights, _ = _episodes(t, rng, (3.0, 7.0), (2.0, 4.0), ramp=1.4, start_on=rng.random() < 0.5)
        seated = weights.sum(1)
        P["lean"] += 30 * 4 * seated * (1 - seated)
    _sit(P, seated, rng)
    moves, _ = _episodes(t, rng, (1.0, 3.0), (1.0, 4.0))
    for side in "rl":
        rest = _at(side, 0.28, 0.12, -0.38) + _wobble(t, rng, 0.02, 0.2, (3,))
        rest = seated[:, None] * rest + (1 - seated[:, None]) * P["hand_" + side]
        spots = _spots(rng, moves.shape[1], side, (0.15, 0.35), (-0.05, 0.2), (-0.3, 0.1))
        _move_hand(P, side, moves * (rng.random(moves.shape[1]) < 0.6), spots, rest)
    P["lean"] += _wobble(t, rng, 4, 0.05) * seated
    P["neck_yaw"] += _wobble(t, rng, 15, 0.08)
    return P


def _waiting(t, rng):
    P = _neutral(t, rng)
    arms = rng.integers(0, 3)
    for side in "rl":  # arms hanging, behind the back or crossed
        held = [P["hand_" + side], _at(side, -0.1, 0.08, -0.45), _POSES[5][side == "l"]][arms]
        P["hand_" + side] = held + _wobble(t, rng, 0.01, 0.2, (3,))
    _shift_weight(P, t, rng, 5, 0.06)
    looks, _ = _episodes(t, rng, (1.0, 3.0), (1.0, 4.0))
    P["neck_yaw"] += looks @ rng.uniform(-60, 60, looks.shape[1])
    _steps(P, t, rng, (1.2, 2.5), (4.0, 10.0), stride=0.65, turn=180)
    return P


ACTION_MOTIONS = {
    "Directions": _directions, "Discussion": _discussion, "Eating": _eating, "Greeting": _greeting,
    "Phoning": _phoning, "Photo": _photo, "Posing": _posing, "Purchases": _purchases, "Sitting": _sitting,
    "SittingDown": lambda t, rng: _sitting(t, rng, down=True), "Smoking": _smoking, "Waiting": _waiting,
    "WalkDog": lambda t, rng: _walking(t, rng, "WalkDog"), "Walking": _walking,
    "WalkTogether": lambda t, rng: _walking(t, rng, "WalkTogether"),
}


# ------------------------------------------------------------------------ channels -> joints
def _pose(P, body) -> np.ndarray:
    """Joint positions (F, 32, 3) in the heading frame (yaw 0), root at the origin."""
    tilt = _rot("y", P["lean"]) @ _rot("x", P["roll"])
    root = _rot("z", P["twist"]) @ tilt
    local = {}
    for side, hip, knee, ankle in (("r", 1, 2, 3), ("l", 6, 7, 8)):
        abduction = P["abd_" + side] * SIDES[side]  # legs are set in the heading frame, not the pelvis frame
        local[hip] = np.swapaxes(root, -1, -2) @ _rot("y", -P["hip_" + side]) @ _rot("x", abduction)
        local[knee] = _rot("y", P["knee_" + side])
        local[ankle] = _rot("y", P["hip_" + side] - P["knee_" + side] - P["foot_" + side])
    spine = _rot("z", P["spine_yaw"] / 2) @ _rot("y", P["spine_pitch"] / 2) @ _rot("x", P["spine_roll"] / 2)
    local[11] = local[12] = spine
    local[13] = _rot("z", P["neck_yaw"]) @ _rot("y", P["neck_pitch"])
    for side, shoulder, elbow in (("r", 25, 26), ("l", 17, 18)):
        local[shoulder], local[elbow] = _arm_ik(body["offsets"][shoulder], P["hand_" + side] * body["scale"],
                                                np.broadcast_to(P["pole_" + side], P["hand_" + side].shape),
                                                body["upper"], body["fore"])
    return forward_kinematics(body["offsets"], local, root)


def _pin_feet(positions, clearance) -> np.ndarray:
    """Root trajectory (F, 3) that keeps the contact point (heel or ball) of the weight-bearing foot
    still and puts the lowest foot point on the floor."""
    def above(joint):
        return positions[:, joint, 2] - clearance[joint]

    def sigmoid(x):
        return 1 / (1 + np.exp(-np.clip(x / 0.01, -50, 50)))

    height, contact, load = {}, {}, {}
    for side, (ankle, toe, tip) in _FOOT.items():
        height[side] = np.minimum(np.minimum(above(ankle), above(toe)), above(tip))
        heel = sigmoid(above(toe) - above(ankle))  # 1 while the heel is down
        contact[side] = heel[:, None] * positions[:, ankle, :2] + (1 - heel[:, None]) * positions[:, toe, :2]
        load[side] = 0.2 + 0.8 * heel  # in double support the weight goes to the foot with its heel down
    lowest = np.minimum(height["r"], height["l"])
    for side in load:
        load[side] = load[side] * np.exp(-np.minimum((height[side] - lowest) / 0.01, 50))
    right = (load["r"] / (load["r"] + load["l"]))[:-1, None]
    step = -(right * np.diff(contact["r"], axis=0) + (1 - right) * np.diff(contact["l"], axis=0))
    xy = np.concatenate([np.zeros((1, 2)), np.cumsum(step, axis=0)])
    return np.concatenate([xy, -lowest[:, None]], axis=1)


def _loop_heading(progress, length, radius, direction, start):
    """Heading (degrees) along a stadium-shaped circuit (straights, half circles) from the distance walked."""
    s = np.cumsum(progress) + start * (length + np.pi * radius) / 2
    u = s % (2 * length + 2 * np.pi * radius)
    arc = ((u >= length) & (u < length + np.pi * radius)) | (u >= 2 * length + np.pi * radius)
    return direction * np.degrees(np.cumsum(arc * progress) / radius)


def _animate(P, body) -> np.ndarray:
    """World positions (F, 32, 3) of a take, root starting at the origin, from its channels."""
    positions = _pose(P, body)
    yaw = P["yaw"]
    if "loop" in P:
        progress = np.diff(_pin_feet(positions, body["clearance"])[:, 0], prepend=0.0)
        yaw = yaw + _loop_heading(progress, *P["loop"])
    positions = np.einsum("fij,fkj->fki", _rot("z", yaw), positions)
    return positions + _pin_feet(positions, body["clearance"])[:, None]


@lru_cache(maxsize=None)
def _room_centre(subject: str) -> np.ndarray:
    """Middle of the floor area where a standing person is seen whole by all 4 cameras of the subject."""
    grid = np.stack(np.meshgrid(np.arange(-2.0, 3.01, 0.1), np.arange(-2.0, 3.01, 0.1)), -1).reshape(-1, 1, 2)
    corners = np.array([[x, y, z] for x in (-0.3, 0.3) for y in (-0.3, 0.3) for z in (0.0, 1.9)])
    points = np.concatenate([grid + corners[:, :2], np.broadcast_to(corners[:, 2:], (len(grid), 8, 1))], -1)
    inside = _margin(points, cameras.cameras_for(subject), axis=1) >= 2 * _MARGIN_PX
    return grid[inside, 0].mean(0)


def _margin(points, cams, axis=None):
    """Smallest distance (px) of projected points (metres) to the image border, over cameras."""
    worst = []
    for cam in cams:
        uv = cameras.project(points * 1000.0, cam)
        edge = np.minimum(np.minimum(uv[..., 0], cam.res_w - uv[..., 0]),
                          np.minimum(uv[..., 1], cam.res_h - uv[..., 1]))
        worst.append(edge.min() if axis is None else edge.min(axis=axis))
    return np.min(worst, axis=0)


def _place(positions, subject, rng) -> np.ndarray:
    """Turn and move a take about the vertical so every joint projects inside every image."""
    cams, centre = cameras.cameras_for(subject), _room_centre(subject)
    middle = (positions[:, 0, :2].min(0) + positions[:, 0, :2].max(0)) / 2
    offset, best = rng.uniform(-0.6, 0.6, 2), (-np.inf, None)
    for shrink in (1.0, 0.5, 0.0):
        for turn in (0, 90, 180, 270, 45, 135, 225, 315):
            rotation = _rot("z", turn)[:2, :2]
            moved = positions.copy()
            moved[..., :2] = (positions[..., :2] - middle) @ rotation.T + centre + shrink * offset
            margin = _margin(moved, cams)
            if margin >= _MARGIN_PX:
                return moved
            best = max(best, (margin, moved), key=lambda item: item[0])
    return best[1]


# ---------------------------------------------------------------------------------- public API
def make_recordings(preset="small", seed: int = 0, progress: bool = False) -> dict:
    """positions_3d: subject -> key -> float32 (frames, 32, 3), metres, Human3.6M world coordinates."""
    preset = _check(preset, seed)
    lengths = _take_lengths(preset, seed)
    recordings = {subject: {} for subject in skeleton.SUBJECTS}
    for subject, key in tqdm(lengths, desc="3D poses", unit="take", disable=not progress):
        body = _body(subject, seed)
        rng = np.random.default_rng([seed, _tag("take", subject, key)])
        t = np.arange(lengths[subject, key]) / FPS
        P = ACTION_MOTIONS[skeleton.action_of(key)](t, rng)
        recordings[subject][key] = _place(_animate(P, body), subject, rng).astype(np.float32)
    return recordings


def _detector_error(uv, rng, sigma, cam):
    """Detector-like error on (F, 17, 2) pixels: jitter, slow drift, left/right swaps and outliers."""
    frames = len(uv)
    scale = np.ones((17, 1))
    scale[[3, 6, 13, 16]] = 2.0  # ankles and wrists
    scale[[12, 15]] = 1.4  # elbows
    window = 9
    slow = np.cumsum(rng.standard_normal((frames + window, 17, 2)), axis=0)
    slow = (slow[window:] - slow[:-window]) / np.sqrt(window)
    uv = uv + sigma * scale * (0.6 * rng.standard_normal(uv.shape) + 0.8 * slow)
    starts, lasting = rng.random(frames) < 0.0012, rng.integers(1, 5, frames)  # ~0.3% of frames
    swapped = starts.copy()
    for k in range(1, 4):  # bursts of 1-4 frames
        swapped[k:] |= starts[:-k] & (lasting[:-k] > k)
    left, right = np.array(skeleton.LEFT_JOINTS), np.array(skeleton.RIGHT_JOINTS)
    pairs = [slice(0, 6), slice(0, 3), slice(3, 6)][rng.integers(0, 3)]
    a, b = left[pairs], right[pairs]
    uv[np.ix_(swapped, np.concatenate([a, b]))] = uv[np.ix_(swapped, np.concatenate([b, a]))]
    outliers = rng.random((frames, 17)) < 0.007
    angle = rng.uniform(0, 2 * np.pi, outliers.sum())
    uv[outliers] += rng.uniform(20, 60, outliers.sum())[:, None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    return np.clip(uv, 0, [cam.res_w - 1, cam.res_h - 1])


def make_detections(positions_3d: dict, seed: int, detector_noise: float = DEFAULT_DETECTOR_NOISE,
                    progress: bool = False) -> dict:
    """positions_2d: subject -> key -> 4 float32 (frames + 0..5, 17, 2) pixel arrays, one per camera."""
    _check_seed(seed)
    if not detector_noise >= 0:
        raise IIVFormerError(f"detector_noise must be >= 0 pixels, got {detector_noise!r}")
    detections = {}
    items = [(subject, key) for subject in positions_3d for key in positions_3d[subject]]
    for subject, key in tqdm(items, desc="2D detections", unit="take", disable=not progress):
        rng = np.random.default_rng([seed, _tag("detections", subject, key)])
        joints = skeleton.to_17_joints(np.asarray(positions_3d[subject][key], dtype=np.float64)) * 1000.0
        views = []
        for cam in cameras.cameras_for(subject):
            uv = cameras.project(joints, cam)
            uv = np.concatenate([uv, np.repeat(uv[-1:], rng.integers(0, 6), axis=0)])
            if detector_noise > 0:
                uv = _detector_error(uv, rng, detector_noise, cam)
            views.append(uv.astype(np.float32))
        detections.setdefault(subject, {})[key] = views
    return detections


class _Counting:
    """A write-only file wrapper that advances a progress bar by the bytes written."""

    def __init__(self, handle, bar):
        self.handle, self.bar = handle, bar

    def write(self, data):
        self.bar.update(len(data))
        return self.handle.write(data)


def _save_npz(path: str, members: dict, compress: bool, progress: bool) -> None:
    """np.savez(_compressed) with fixed zip timestamps (same content -> same bytes), written atomically."""
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as raw, zipfile.ZipFile(raw, "w", allowZip64=True) as archive:
            for member_name, value in members.items():
                info = zipfile.ZipInfo(member_name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
                info.external_attr = 0o600 << 16
                with archive.open(info, "w", force_zip64=True) as member, tqdm(
                        desc=f"writing {name}", unit="B", unit_scale=True, leave=False,
                        disable=not progress or member_name != next(iter(members))) as bar:
                    np.lib.format.write_array(_Counting(member, bar), np.asanyarray(value), allow_pickle=True)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_dataset(out_dir, preset="small", seed: int = 0, detector_noise: float = DEFAULT_DETECTOR_NOISE,
                  progress: bool = True, compress: bool = True) -> tuple:
    """Write data_3d_h36m.npz and data_2d_h36m_synthetic.npz to out_dir; returns both paths."""
    _check(preset, seed)
    if not detector_noise >= 0:
        raise IIVFormerError(f"detector_noise must be >= 0 pixels, got {detector_noise!r}")
    os.makedirs(out_dir, exist_ok=True)
    path_3d = os.path.join(out_dir, "data_3d_h36m.npz")
    path_2d = os.path.join(out_dir, "data_2d_h36m_synthetic.npz")
    positions_3d = make_recordings(preset, seed, progress=progress)
    positions_2d = make_detections(positions_3d, seed, detector_noise, progress=progress)
    _save_npz(path_3d, {"positions_3d": positions_3d}, compress, progress)
    _save_npz(path_2d, {"positions_2d": positions_2d, "metadata": METADATA}, compress, progress)
    return path_3d, path_2d
