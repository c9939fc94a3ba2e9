"""One function per Human3.6M action, writing a recording's channels; ACTION_MOTIONS maps the names to them.

Each function takes the frame times t (F,) in seconds and the recording's random generator, and returns
the channels (see :mod:`iivformer.synthetic.motion`): a person standing quietly, plus what the
action adds (steps, gestures, sitting, a walk around a loop).
"""
import numpy as np

from iivformer.synthetic.motion import (OTHER, SIDES, chest_point, episodes, gait, move_hand, neutral, shift_weight,
                                        sit, spots, steps, wobble)


def _walking(t, rng, kind="Walking"):
    """Walking around a loop; for "WalkDog" with the leash in one hand, stopping and changing pace,
    for "WalkTogether" slower, looking at a companion."""
    channels = neutral(t, rng)
    frequency = rng.uniform(0.95, 1.05) + wobble(t, rng, 0.02, 0.1)
    envelope, stride, swing = np.ones_like(t), 1.0, (1.0, 1.0)
    leash = rng.choice(["r", "l"])
    if kind == "WalkDog":  # the dog sets the pace: speed changes and stops
        frequency = frequency + wobble(t, rng, 0.05, 0.15)
        stops, _ = episodes(t, rng, (0.8, 2.0), (3.0, 8.0), ramp=0.6)
        envelope = 1 - 0.9 * stops.sum(1)
        swing = (0.1, 1.0) if leash == "r" else (1.0, 0.1)
        channels["hand_" + leash] = chest_point(leash, 0.3, 0.08, -0.42) + wobble(t, rng, 0.03, 1.2, (3,))
    elif kind == "WalkTogether":  # slower, talking to a companion at one side
        frequency, stride, swing = frequency * 0.82, 0.85, (0.6, 0.6)
        looks, _ = episodes(t, rng, (1.0, 3.0), (1.0, 4.0), start_on=True)
        channels["neck_yaw"] += looks.sum(1) * rng.choice([-1, 1]) * rng.uniform(30, 50)
    gait(channels, t, rng, envelope, frequency, stride=stride, swing=swing)
    channels["loop"] = (rng.uniform(0.3, 1.0), rng.uniform(0.5, 0.8), rng.choice([-1.0, 1.0]), rng.uniform(0, 4))
    return channels


def _directions(t, rng):
    """Pointing the way with one arm or the other, looking where the hand points, with a few steps."""
    channels = neutral(t, rng)
    weights, _ = episodes(t, rng, (1.5, 3.5), (0.8, 3.0), ramp=0.5, start_on=rng.random() < 0.5)
    sides = rng.choice(["r", "l"], weights.shape[1])
    azimuth, elevation = rng.uniform(-20, 70, len(sides)), rng.uniform(-15, 25, len(sides))
    for side in "rl":
        mine = weights * (sides == side)
        a, e = np.radians(azimuth), np.radians(elevation)
        way = np.stack([np.cos(a) * np.cos(e), SIDES[side] * np.sin(a) * np.cos(e), np.sin(e)], -1)
        point = chest_point(side, 0, 0.15, -0.02) + 0.52 * way
        move_hand(channels, side, mine, point)
        channels["neck_yaw"] += mine @ (SIDES[side] * azimuth * 0.6)
    steps(channels, t, rng, (1.0, 2.5), (2.0, 5.0), stride=0.35, turn=90)
    return channels


def _discussion(t, rng):
    """Talking with gestures of both hands, swaying and turning the chest, with a few steps."""
    channels = neutral(t, rng)
    shift_weight(channels, t, rng, 4, 0.15)
    channels["spine_yaw"] += wobble(t, rng, 10, 0.1)
    for side in "rl":
        weights, _ = episodes(t, rng, (1.0, 4.0), (0.5, 3.0))
        targets = spots(rng, weights.shape[1], side, (0.2, 0.35), (-0.05, 0.25), (-0.3, 0.05))
        move_hand(channels, side, weights, targets)
        channels["hand_" + side] += weights.sum(1, keepdims=True) * wobble(t, rng, 0.04, 1.5, (3,))
    steps(channels, t, rng, (1.0, 2.0), (4.0, 10.0), stride=0.3, turn=40)
    return channels


def _hand_to_mouth(t, rng, channels, side, on, off, rest):
    """Bring one hand from rest to the mouth in episodes (a bite, a puff), nodding the head a little."""
    weights, _ = episodes(t, rng, on, off, ramp=0.45)
    move_hand(channels, side, weights, chest_point(side, 0.15, 0.02, 0.04), rest)
    channels["neck_pitch"] += 8 * weights.sum(1)


def _eating(t, rng):
    """Sitting at a table, one hand bringing food to the mouth, the other on the table."""
    channels = neutral(t, rng)
    sit(channels, np.ones_like(t), rng)
    side = "r" if rng.random() < 0.75 else "l"
    on_table = chest_point(side, 0.32, 0.12, -0.28) + wobble(t, rng, 0.03, 0.3, (3,))
    _hand_to_mouth(t, rng, channels, side, (0.9, 1.8), (1.0, 3.5), on_table)
    channels["hand_" + OTHER[side]] = chest_point(OTHER[side], 0.3, 0.14, -0.32) + wobble(t, rng, 0.03, 0.3, (3,))
    channels["spine_pitch"] += 8
    return channels


def _smoking(t, rng):
    """Standing with a cigarette in one hand, now and then at the mouth, with a few steps."""
    channels = neutral(t, rng)
    side = "r" if rng.random() < 0.7 else "l"
    held = chest_point(side, 0.2, 0.16, -0.32) + wobble(t, rng, 0.02, 0.3, (3,))
    _hand_to_mouth(t, rng, channels, side, (1.2, 2.5), (2.5, 6.0), held)
    shift_weight(channels, t, rng, 4, 0.08)
    steps(channels, t, rng, (1.0, 2.0), (5.0, 12.0), stride=0.3, turn=60)
    return channels


def _phoning(t, rng):
    """One hand holding a phone to the ear (elbow forward), the other gesturing, with a few steps."""
    channels = neutral(t, rng)
    side = "r" if rng.random() < 0.7 else "l"
    calls, _ = episodes(t, rng, (4.0, 12.0), (1.0, 3.0), ramp=0.7, start_on=True)
    move_hand(channels, side, calls, chest_point(side, 0.05, 0.07, 0.02))
    channels["pole_" + side] = np.array([0.5, 0.0, 0.0])  # elbow forward
    channels["neck_yaw"] -= 10 * SIDES[side] * calls.sum(1)
    talk, _ = episodes(t, rng, (1.0, 3.0), (1.0, 4.0))
    targets = spots(rng, talk.shape[1], OTHER[side], (0.2, 0.35), (0.05, 0.2), (-0.3, -0.1))
    move_hand(channels, OTHER[side], talk, targets)
    steps(channels, t, rng, (1.5, 3.0), (3.0, 8.0), stride=0.5, turn=120)
    return channels


def _greeting(t, rng):
    """Waving with one hand or shaking hands (bowing a little), with a few steps."""
    channels = neutral(t, rng)
    side = "r" if rng.random() < 0.8 else "l"
    waves, _ = episodes(t, rng, (1.2, 2.5), (0.8, 2.5), start_on=rng.random() < 0.5)
    shake = (rng.random(waves.shape[1]) < 0.3).astype(float)  # shake hands instead of waving
    move_hand(channels, side, waves * (1 - shake), chest_point(side, 0.12, 0.25, 0.32))
    move_hand(channels, side, waves * shake, chest_point(side, 0.38, 0.05, -0.3))
    waving, shaking = waves @ (1 - shake), waves @ shake
    wave = waving * np.sin(2 * np.pi * rng.uniform(2, 3) * t)
    channels["hand_" + side] += np.outer(wave, chest_point(side, 0, 0.09, 0.02))
    channels["hand_" + side] += np.outer(shaking * np.sin(2 * np.pi * rng.uniform(2, 3) * t), [0, 0, 0.04])
    channels["spine_pitch"] += 12 * shaking
    steps(channels, t, rng, (1.0, 2.0), (2.0, 5.0), stride=0.5, turn=60)
    return channels


def _photo(t, rng):
    """Both hands raising a camera to the eyes, sometimes crouching, with a few steps."""
    channels = neutral(t, rng)
    shots, _ = episodes(t, rng, (1.5, 5.0), (1.0, 3.0), start_on=rng.random() < 0.5)
    crouch = (shots * (rng.random(shots.shape[1]) < 0.3)).sum(1) * rng.uniform(30, 60)
    for side in "rl":
        held = chest_point(side, 0.22, 0.08, -0.22)
        move_hand(channels, side, shots, chest_point(side, 0.22, 0.08, 0.08), held)
        channels["hip_" + side] += crouch / 2
        channels["knee_" + side] += crouch
    channels["neck_pitch"] -= 5 * shots.sum(1)
    steps(channels, t, rng, (1.0, 2.0), (2.0, 4.0), stride=0.4, turn=70)
    return channels


_POSES = (  # (right wrist, left wrist) targets of a few poses people strike
    (chest_point("r", 0.0, 0.62, 0.1), chest_point("l", 0.0, 0.62, 0.1)),  # arms spread out
    (chest_point("r", 0.0, 0.25, -0.38), chest_point("l", 0.0, 0.25, -0.38)),  # hands on hips
    (chest_point("r", 0.1, 0.25, 0.45), chest_point("l", 0.03, 0.17, -0.54)),  # right arm up
    (chest_point("r", 0.03, 0.17, -0.54), chest_point("l", 0.1, 0.25, 0.45)),  # left arm up
    (chest_point("r", -0.05, 0.1, 0.22), chest_point("l", -0.05, 0.1, 0.22)),  # hands behind the head
    (chest_point("r", 0.2, -0.1, -0.15), chest_point("l", 0.2, -0.1, -0.15)),  # arms crossed
)


def _posing(t, rng):
    """Striking one pose after another (_POSES), turning and leaning the body."""
    channels = neutral(t, rng)
    poses, _ = episodes(t, rng, (2.0, 4.5), (0.6, 1.5), ramp=0.8, start_on=True)
    chosen = rng.integers(0, len(_POSES), poses.shape[1])
    for i, side in enumerate("rl"):
        move_hand(channels, side, poses, np.array([_POSES[c][i] for c in chosen]).reshape(-1, 3))
    for channel, spread in (("spine_yaw", 25), ("spine_roll", 10), ("lean", 8), ("neck_yaw", 30), ("abd_r", 8)):
        channels[channel] += poses @ rng.uniform(-spread, spread, poses.shape[1])
    return channels


def _purchases(t, rng):
    """Bending and reaching down for things with one or both hands, and walking a few steps between."""
    channels = neutral(t, rng)
    picks, _ = episodes(t, rng, (1.5, 3.0), (1.5, 4.0), ramp=0.7)
    bend, knees = picks @ rng.uniform(35, 60, picks.shape[1]), picks @ rng.uniform(15, 45, picks.shape[1])
    channels["lean"] += bend
    channels["spine_pitch"] += bend / 3
    channels["neck_pitch"] -= bend / 3
    both = rng.random(picks.shape[1]) < 0.4
    for side, uses in (("r", both | (rng.random(picks.shape[1]) < 0.6)), ("l", both)):
        channels["hip_" + side] += knees / 2
        channels["knee_" + side] += knees
        reach = chest_point(side, 0.4, 0.1, -0.42)
        move_hand(channels, side, picks * uses, reach)
    steps(channels, t, rng, (1.5, 3.0), (2.0, 4.0), stride=0.6, turn=90)
    return channels


def _sitting(t, rng, down=False):
    """Sitting on a chair moving the hands; with down=True ("SittingDown"), also standing up and sitting down."""
    channels = neutral(t, rng)
    seated = np.ones_like(t)
    if down:  # stand up and sit down again and again
        weights, _ = episodes(t, rng, (3.0, 7.0), (2.0, 4.0), ramp=1.4, start_on=rng.random() < 0.5)
        seated = weights.sum(1)
        channels["lean"] += 30 * 4 * seated * (1 - seated)
    sit(channels, seated, rng)
    moves, _ = episodes(t, rng, (1.0, 3.0), (1.0, 4.0))
    for side in "rl":
        rest = chest_point(side, 0.28, 0.12, -0.38) + wobble(t, rng, 0.02, 0.2, (3,))
        rest = seated[:, None] * rest + (1 - seated[:, None]) * channels["hand_" + side]
        targets = spots(rng, moves.shape[1], side, (0.15, 0.35), (-0.05, 0.2), (-0.3, 0.1))
        move_hand(channels, side, moves * (rng.random(moves.shape[1]) < 0.6), targets, rest)
    channels["lean"] += wobble(t, rng, 4, 0.05) * seated
    channels["neck_yaw"] += wobble(t, rng, 15, 0.08)
    return channels


def _waiting(t, rng):
    """Standing, arms hanging, behind the back or crossed, shifting the weight, looking around, rarely stepping."""
    channels = neutral(t, rng)
    arms = rng.integers(0, 3)
    for side in "rl":  # arms hanging, behind the back or crossed
        held = [channels["hand_" + side], chest_point(side, -0.1, 0.08, -0.45), _POSES[5][side == "l"]][arms]
        channels["hand_" + side] = held + wobble(t, rng, 0.01, 0.2, (3,))
    shift_weight(channels, t, rng, 5, 0.06)
    looks, _ = episodes(t, rng, (1.0, 3.0), (1.0, 4.0))
    channels["neck_yaw"] += looks @ rng.uniform(-60, 60, looks.shape[1])
    steps(channels, t, rng, (1.2, 2.5), (4.0, 10.0), stride=0.65, turn=180)
    return channels


# action name -> function (t, rng) -> the channels of a recording
ACTION_MOTIONS = {
    "Directions": _directions, "Discussion": _discussion, "Eating": _eating, "Greeting": _greeting,
    "Phoning": _phoning, "Photo": _photo, "Posing": _posing, "Purchases": _purchases, "Sitting": _sitting,
    "SittingDown": lambda t, rng: _sitting(t, rng, down=True), "Smoking": _smoking, "Waiting": _waiting,
    "WalkDog": lambda t, rng: _walking(t, rng, "WalkDog"), "Walking": _walking,
    "WalkTogether": lambda t, rng: _walking(t, rng, "WalkTogether"),
}

