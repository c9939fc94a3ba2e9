"""Motion: a recording's channels over time, the helpers the actions write them with, and the animation.

A recording's motion is a dict of channels, arrays over its F frames: joint angles in degrees (the names
in CHANNELS), wrist targets "hand_r"/"hand_l" (F, 3) in metres, in the chest frame relative to the
thorax (turned into shoulder and elbow rotations by two-bone IK), elbow biases "pole_r"/"pole_l"
and, for walking, the "loop" it walks around. :func:`animate` turns the channels into the 32
joints. The feet are pinned to the floor: the root follows whichever foot carries the weight, so
walking travels and standing people do not slide. Everything is vectorised over frames.
"""
import numpy as np

from iivformer import skeleton
from iivformer.synthetic.body import arm_ik, forward_kinematics, joints_of_side, rotation

CHANNELS = ("yaw", "lean", "roll", "twist", "spine_pitch", "spine_yaw", "spine_roll", "neck_pitch", "neck_yaw",
            "hip_r", "hip_l", "abd_r", "abd_l", "knee_r", "knee_l", "foot_r", "foot_l")
SIDES = {"r": -1.0, "l": 1.0}  # sign of the person's-left axis for each side
OTHER = {"r": "l", "l": "r"}
_FOOT = {side: joints_of_side(side, "Foot", "ToeBase", "ToeSite") for side in "rl"}  # ankle, toe base, toe tip


def chest_point(side, forward, lateral, up):
    """A wrist target relative to the thorax (standard body): lateral > 0 is toward that side."""
    return np.array([forward, SIDES[side] * lateral, up])


def smoothstep(x):
    """0 below 0, 1 above 1 and a smooth S-curve between, elementwise."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def wobble(t, rng, amplitude, frequency, shape=()):
    """Smooth random signal (F, *shape): three sinusoids of random frequency and phase."""
    f = frequency * rng.uniform(0.5, 1.5, (3,) + shape)
    phase = rng.uniform(0, 2 * np.pi, (3,) + shape)
    wave = sum(np.sin(2 * np.pi * f[i] * t.reshape((-1,) + (1,) * len(shape)) + phase[i]) for i in range(3))
    return amplitude * wave / np.sqrt(1.5)


def episodes(t, rng, on, off, ramp=0.5, start_on=False):
    """Smooth on/off boxes (F, K) for episodes lasting U(on) seconds with U(off) gaps; and their spans."""
    spans, x = [], (-rng.uniform(0, on[0]) if start_on else rng.uniform(-on[0], off[0]))
    while x < t[-1]:
        end = x + rng.uniform(*on)
        spans.append((x, end))
        x = end + rng.uniform(*off)
    spans = np.array(spans).reshape(-1, 2)
    w = smoothstep((t[:, None] - spans[:, 0]) / ramp) * smoothstep((spans[:, 1] - t[:, None]) / ramp)
    return w, spans


def blend(rest, weights, values):
    """Blend a rest value with one value per episode: rest (F, D) or (D,), weights (F, K), values (K, D)."""
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), (weights.shape[1], np.shape(rest)[-1]))
    return rest * (1 - weights.sum(1, keepdims=True)) + weights @ values


def move_hand(channels, side, weights, values, rest=None):
    """Blend a wrist target toward one target per episode; on the way the hand swings out in front
    of the body, so that it never passes through the shoulder (which would flip the elbow)."""
    rest = channels["hand_" + side] if rest is None else rest
    swing = (4 * weights * (1 - weights)).sum(1, keepdims=True) * chest_point(side, 0.2, 0.1, 0.0)
    channels["hand_" + side] = blend(rest, weights, values) + swing


def heading_turns(t, spans, degrees):
    """Heading that turns by the given degrees over each episode span."""
    progress = smoothstep((t[:, None] - spans[:, 0]) / (spans[:, 1] - spans[:, 0]))
    return progress @ np.asarray(degrees, dtype=np.float64)


def _bump(phase, power):
    """A smooth bump over the cycle, 1 at phase 0 and 0 at phase pi; a higher power makes it narrower."""
    return ((1 + np.cos(phase)) / 2) ** power


def shift_weight(channels, t, rng, degrees, frequency):
    """Sway the pelvis sideways over the (planted) feet."""
    shift = wobble(t, rng, degrees, frequency)
    channels["abd_r"] += shift
    channels["abd_l"] -= shift
    channels["roll"] += shift / 2


def spots(rng, count, side, forward, lateral, up):
    """Random wrist targets in boxes given as (low, high) ranges, mirrored for the side."""
    lateral = SIDES[side] * rng.uniform(*lateral, count)
    return np.stack([rng.uniform(*forward, count), lateral, rng.uniform(*up, count)], -1)


def neutral(t, rng):
    """Standing quietly: slight knee bend, feet apart, arms hanging, breathing and sway."""
    frames = len(t)
    channels = {name: np.zeros(frames) for name in CHANNELS}
    channels["yaw"] += rng.uniform(0, 360)
    stance = rng.uniform(2, 6)
    channels["abd_r"] += stance
    channels["abd_l"] += stance
    for side in "rl":
        channels["knee_" + side] += 4 + wobble(t, rng, 1.5, 0.2)
        channels["hip_" + side] += 2
        hanging = np.tile(chest_point(side, 0.03, 0.17, -0.54), (frames, 1))
        channels["hand_" + side] = hanging + wobble(t, rng, 0.01, 0.2, (3,))
        channels["pole_" + side] = np.zeros(3)  # bias of the elbow direction (see body.arm_ik)
    shift_weight(channels, t, rng, 2.0, 0.1)
    channels["spine_pitch"] += 3 + wobble(t, rng, 1.5, 0.25)
    channels["spine_yaw"] += wobble(t, rng, 3, 0.1)
    channels["neck_yaw"] += wobble(t, rng, 8, 0.1)
    channels["neck_pitch"] += 5 + wobble(t, rng, 4, 0.15)
    return channels


def gait(channels, t, rng, envelope, frequency, stride=1.0, swing=(1.0, 1.0)):
    """Add a walking cycle (legs, pelvis, arm swing) scaled by envelope (F,) at frequency (F,) strides/s."""
    phase = 2 * np.pi * np.cumsum(frequency * np.ones_like(t)) / skeleton.FPS + rng.uniform(0, 2 * np.pi)
    for side, leg, arm_amount in (("r", phase, swing[0]), ("l", phase + np.pi, swing[1])):
        since_strike = (leg - np.pi / 2) % (2 * np.pi)  # the heel strikes at leg = pi/2
        stance = since_strike < np.pi  # the thigh swings back steadily until the other heel strikes
        thigh = np.where(stance, 1 - 2 * since_strike / np.pi, -np.cos(since_strike - np.pi))
        channels["hip_" + side] += envelope * stride * (2 + 22 * thigh)
        channels["knee_" + side] += envelope * (60 * stride * _bump(leg + 0.16, 4)
                                                + 5 * _bump(leg - np.pi / 2 - 0.7, 4))
        channels["foot_" + side] += envelope * stride * (10 * _bump(leg - np.pi / 2, 4)
                                                         - 25 * _bump(leg + 0.25 * np.pi, 6))
        angle = envelope * arm_amount * 20 * np.sin(leg + np.pi)
        shoulder = chest_point(side, 0, 0.15, -0.02)
        swung = np.einsum("fij,fj->fi", rotation("y", -angle), channels["hand_" + side] - shoulder)
        channels["hand_" + side] = shoulder + swung
    channels["twist"] += envelope * 4 * np.sin(phase)
    channels["spine_yaw"] -= envelope * 7 * np.sin(phase)
    channels["lean"] += envelope * 4
    channels["roll"] += envelope * 2 * np.sin(2 * phase)


def sit(channels, amount, rng):
    """Blend toward sitting on a chair (thighs horizontal, shins vertical) by amount (F,) in 0..1."""
    hip, knee, apart = rng.uniform(85, 95), rng.uniform(85, 100), rng.uniform(4, 12)
    for side in "rl":
        channels["hip_" + side] += amount * hip
        channels["knee_" + side] += amount * knee
        channels["abd_" + side] += amount * apart
    channels["lean"] -= amount * rng.uniform(0, 8)


def steps(channels, t, rng, on, off, stride, turn):
    """Occasional bouts of a few steps, turning during each bout: by up to +-turn degrees while near
    the starting point, back towards it (estimated by dead reckoning) once more than 0.5 m away."""
    weights, spans = episodes(t, rng, on, off, ramp=0.6)
    frequency = rng.uniform(0.8, 1.0)
    gait(channels, t, rng, weights.sum(1), frequency, stride=stride)
    heading, where, turns = np.radians(channels["yaw"][0]), np.zeros(2), []
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
    channels["yaw"] += heading_turns(t, spans, turns)


# ------------------------------------------------------------------------ channels -> joints
def _pose(channels, body) -> np.ndarray:
    """Joint positions (F, 32, 3) in the heading frame (yaw 0), root at the origin."""
    tilt = rotation("y", channels["lean"]) @ rotation("x", channels["roll"])
    root = rotation("z", channels["twist"]) @ tilt
    joint, local = skeleton.JOINT_INDEX_32, {}
    for side in "rl":
        hip, knee, ankle = joints_of_side(side, "Hip", "Knee", "Foot")
        abduction = channels["abd_" + side] * SIDES[side]  # legs are set in the heading frame, not the pelvis frame
        hip_angle = rotation("y", -channels["hip_" + side])
        local[hip] = np.swapaxes(root, -1, -2) @ hip_angle @ rotation("x", abduction)
        local[knee] = rotation("y", channels["knee_" + side])
        local[ankle] = rotation("y", channels["hip_" + side] - channels["knee_" + side] - channels["foot_" + side])
    spine = (rotation("z", channels["spine_yaw"] / 2) @ rotation("y", channels["spine_pitch"] / 2)
             @ rotation("x", channels["spine_roll"] / 2))  # the spine bends over two joints, half at each
    local[joint["SpineBase"]] = local[joint["Spine"]] = spine
    local[joint["Thorax"]] = rotation("z", channels["neck_yaw"]) @ rotation("y", channels["neck_pitch"])
    for side in "rl":
        shoulder, elbow = joints_of_side(side, "Shoulder", "Elbow")
        hand, pole = channels["hand_" + side], channels["pole_" + side]
        local[shoulder], local[elbow] = arm_ik(body["offsets"][shoulder], hand * body["scale"],
                                               np.broadcast_to(pole, hand.shape), body["upper"], body["fore"])
    return forward_kinematics(body["offsets"], local, root)


def _pin_feet(positions, clearance) -> np.ndarray:
    """Root trajectory (F, 3) that keeps the contact point (heel or ball) of the weight-bearing foot
    still and puts the lowest foot point on the floor."""
    def above(joint):
        return positions[:, joint, 2] - clearance[joint]

    def sigmoid(x):
        return 1 / (1 + np.exp(-np.clip(x / 0.01, -50, 50)))

    height, contact, load = {}, {}, {}
    for side, (ankle, toe, toe_site) in _FOOT.items():
        height[side] = np.minimum(np.minimum(above(ankle), above(toe)), above(toe_site))
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


def animate(channels, body) -> np.ndarray:
    """World positions (F, 32, 3) of a recording, root starting at the origin, from its channels."""
    positions = _pose(channels, body)
    yaw = channels["yaw"]
    if "loop" in channels:
        progress = np.diff(_pin_feet(positions, body["clearance"])[:, 0], prepend=0.0)
        yaw = yaw + _loop_heading(progress, *channels["loop"])
    positions = np.einsum("fij,fkj->fki", rotation("z", yaw), positions)
    return positions + _pin_feet(positions, body["clearance"])[:, None]
