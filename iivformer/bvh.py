"""Reading BVH motion capture: a small, strict parser and forward kinematics in NumPy.

Why not a library: bvhio 1.5.4 (August 2025, the maintained BVH package on PyPI) computes the same
joint positions as :meth:`Bvh.positions` on the CMU clips (to 6e-7 m: it works in float32), but it
loops forever on a truncated file (its line reader does not stop at the end of the file), reads an
unknown channel name such as ``Wrotation`` without a word and shifts every later value, reports wrong
line numbers, has no size limits, keeps end sites out of its joints and brings two more packages
(PyGLM and spatial-transform). This module refuses a malformed file with one
:class:`~iivformer.errors.DataError` line naming the file and the line, and caps the sizes.

The format::

    HIERARCHY
    ROOT Hips
    {
        OFFSET 0 0 0
        CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
        JOINT LeftHip
        {
            OFFSET 0.07 -0.09 0.04
            CHANNELS 3 Zrotation Yrotation Xrotation
            End Site
            {
                OFFSET 0 -0.4 0
            }
        }
    }
    MOTION
    Frames: 2
    Frame Time: 0.008333
    <one line per frame: every joint's channel values, joints in file order>

Conventions (those of Biovision, Blender and bvhio): a joint sits at its OFFSET from its parent, in
the parent's frame; rotation channels are degrees, applied in the order written (``Zrotation
Yrotation Xrotation`` is R = Rz Ry Rx, rotating column vectors); a position channel replaces that
coordinate of the OFFSET (the root's position channels are its place in the world). An End Site is
a point named ``<joint>/end`` (``/end2``, ... when a joint has more than one).
"""
from dataclasses import dataclass

import numpy as np

from iivformer.errors import DataError, printable
from iivformer.files import read_limited

MAX_BYTES = 256 << 20  # 256 MiB of text
MAX_JOINTS = 1024  # joints and end sites
MAX_JOINT_FRAMES = 4_000_000  # frames x points (38 CMU points: 29 minutes at 60 fps); about 100 B each in memory
MAX_VALUE = 1e6  # degrees or length units; beyond this a file is damaged
CHANNEL_NAMES = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")
_CHANNELS = {name.lower(): name for name in CHANNEL_NAMES}


@dataclass(frozen=True)
class Bvh:
    """A BVH recording: its points (joints and end sites in file order, so parents first) and motion."""

    path: str
    names: tuple  # joint names, end sites as '<joint>/end'
    parents: tuple  # index of each point's parent, -1 for the root
    offsets: np.ndarray  # (J, 3) file units, in the parent's frame
    channels: tuple  # per point, a tuple of channel names (end sites: ())
    frame_time: float  # seconds
    motion: np.ndarray  # (frames, channels) float64

    @property
    def frames(self) -> int:
        return len(self.motion)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def index(self, name: str) -> int:
        return self.names.index(name)

    def rest_positions(self) -> np.ndarray:
        """(J, 3): every point with all rotations zero and the root at its OFFSET."""
        positions = np.zeros((len(self.names), 3))
        for point, parent in enumerate(self.parents):
            positions[point] = self.offsets[point] + (positions[parent] if parent >= 0 else 0.0)
        return positions

    def positions(self) -> np.ndarray:
        """(frames, J, 3) float64 world positions of every joint and end site, in file units."""
        frames = self.frames
        rotations = np.empty((len(self.names), frames, 3, 3))
        positions = np.empty((frames, len(self.names), 3))
        column = 0
        for point, parent in enumerate(self.parents):
            local = np.repeat(self.offsets[point][None], frames, axis=0)
            rotation = np.broadcast_to(np.eye(3), (frames, 3, 3))
            for channel in self.channels[point]:
                axis = "XYZ".index(channel[0])
                if channel.endswith("position"):
                    local[:, axis] = self.motion[:, column]
                else:
                    rotation = rotation @ axis_rotation(axis, self.motion[:, column])
                column += 1
            if parent < 0:
                positions[:, point], rotations[point] = local, rotation
            else:
                positions[:, point] = positions[:, parent] + np.einsum("fij,fj->fi", rotations[parent], local)
                rotations[point] = rotations[parent] @ rotation
        return positions


def axis_rotation(axis: int, degrees: np.ndarray) -> np.ndarray:
    """(F, 3, 3) right-handed rotations by `degrees` about axis 0 (X), 1 (Y) or 2 (Z)."""
    angle = np.radians(degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    matrices = np.zeros(angle.shape + (3, 3))
    first, second = (axis + 1) % 3, (axis + 2) % 3  # X: (Y, Z), Y: (Z, X), Z: (X, Y): cyclic, so + sin below
    matrices[..., axis, axis] = 1.0
    matrices[..., first, first] = matrices[..., second, second] = cos
    matrices[..., first, second], matrices[..., second, first] = -sin, sin
    return matrices


class _Tokens:
    """The words of the hierarchy with their line numbers, read one at a time."""

    def __init__(self, path, lines):
        self.path, self.words, self.at = path, [], 0
        for number, line in lines:
            self.words.extend((word, number) for word in line.split())
            if len(self.words) > 40 * MAX_JOINTS:
                raise DataError(f"{path}: line {number}: the hierarchy goes on past {40 * MAX_JOINTS} words "
                                f"(a BVH skeleton has at most {MAX_JOINTS} joints here)")

    def fail(self, message, line=None):
        line = line if line is not None else self.words[min(self.at, len(self.words) - 1)][1]
        raise DataError(f"{self.path}: line {line}: {message}")

    def next(self, what: str) -> tuple:
        if self.at >= len(self.words):
            self.fail(f"the hierarchy ends early, expected {what}")
        self.at += 1
        return self.words[self.at - 1]

    def expect(self, word: str) -> None:
        found, line = self.next(repr(word))
        if found != word:
            self.fail(f"expected {word!r}, found {printable(found)[:40]!r}", line)

    def number(self, what: str) -> float:
        word, line = self.next(what)
        try:
            value = float(word)
        except ValueError:
            self.fail(f"{what} should be a number, found {printable(word)[:40]!r}", line)
        if not abs(value) <= MAX_VALUE:
            self.fail(f"{what} {printable(word)[:40]} is not a finite number within +-{MAX_VALUE:g}", line)
        return value


def _parse_hierarchy(tokens: _Tokens) -> tuple:
    """(names, parents, offsets, channels) of a hierarchy; the points in file order."""
    names, parents, offsets, channels, stack = [], [], [], [], []

    def add(name, line, parent, is_joint):
        if len(names) >= MAX_JOINTS:
            tokens.fail(f"more than {MAX_JOINTS} joints", line)
        if name in names:
            tokens.fail(f"the joint name {printable(name)[:40]!r} is used twice", line)
        tokens.expect("{")
        tokens.expect("OFFSET")
        offsets.append([tokens.number("OFFSET") for _ in range(3)])
        names.append(name), parents.append(parent), channels.append(_channels(tokens) if is_joint else ())
        if is_joint:
            stack.append(len(names) - 1)
        else:
            tokens.expect("}")

    tokens.expect("HIERARCHY")
    tokens.expect("ROOT")
    add(*tokens.next("the root's name"), -1, True)
    while stack:
        word, line = tokens.next("'JOINT', 'End Site' or '}'")
        if word == "JOINT":
            add(*tokens.next("a joint name"), stack[-1], True)
        elif word == "End":
            tokens.expect("Site")
            sites = sum(1 for name in names if name.startswith(names[stack[-1]] + "/end"))
            add(names[stack[-1]] + "/end" + (str(sites + 1) if sites else ""), line, stack[-1], False)
        elif word == "}":
            stack.pop()
        else:
            tokens.fail(f"expected 'JOINT', 'End Site' or '}}', found {printable(word)[:40]!r}", line)
    if tokens.at < len(tokens.words):
        word, line = tokens.words[tokens.at]
        tokens.fail("only one ROOT is supported" if word == "ROOT" else
                    f"expected 'MOTION' after the hierarchy, found {printable(word)[:40]!r}", line)
    return tuple(names), tuple(parents), np.array(offsets, dtype=np.float64), tuple(channels)


def _channels(tokens: _Tokens) -> tuple:
    tokens.expect("CHANNELS")
    word, line = tokens.next("the number of channels")
    if word not in "0123456" or len(word) != 1:
        tokens.fail(f"CHANNELS should be followed by 0 to 6 channel names, found {printable(word)[:40]!r}", line)
    names = []
    for _ in range(int(word)):
        name, line = tokens.next("a channel name")
        if name.lower() not in _CHANNELS:
            tokens.fail(f"unknown channel {printable(name)[:40]!r} (expected CHANNELS {word} and {word} of "
                        f"{', '.join(CHANNEL_NAMES)})", line)
        names.append(_CHANNELS[name.lower()])
    if len(set(names)) != len(names):
        tokens.fail(f"a channel repeats in CHANNELS {word} {' '.join(names)}", line)
    return tuple(names)


def _header_value(path, lines, at: int, label: str, convert, what: str):
    """The value on the `label` line of the MOTION header (line index `at`), converted."""
    if at >= len(lines):
        raise DataError(f"{path}: the file ends after MOTION; expected '{label} ...'")
    number, text = lines[at]
    words = text.split()
    label_words = label.split()
    if words[:len(label_words)] != label_words or len(words) != len(label_words) + 1:
        raise DataError(f"{path}: line {number}: expected '{label} <{what}>', found {printable(text.strip())[:60]!r}")
    try:
        return convert(words[-1])
    except ValueError:
        raise DataError(f"{path}: line {number}: {label} should be {what}, found {printable(words[-1])[:40]!r}") from None


def _parse_motion(path, lines, width: int, joints: int) -> tuple:
    """(frame_time, motion (frames, width)) from the lines after MOTION."""
    lines = [(number, text) for number, text in lines if text.strip()]
    frames = _header_value(path, lines, 0, "Frames:", int, "a whole number of frames")
    frame_time = _header_value(path, lines, 1, "Frame Time:", float, "seconds per frame")
    if not 1e-5 <= frame_time <= 10:
        raise DataError(f"{path}: line {lines[1][0]}: Frame Time {frame_time:g} s is not between 1e-05 and 10")
    if not 1 <= frames <= MAX_JOINT_FRAMES // joints:
        raise DataError(f"{path}: line {lines[0][0]}: Frames: {frames}; expected 1 to {MAX_JOINT_FRAMES // joints} "
                        f"frames for {joints} joints (split longer recordings)")
    rows = lines[2:]
    if len(rows) != frames:
        last = rows[-1][0] if rows else lines[1][0]
        raise DataError(f"{path}: line {last}: the file holds {len(rows)} frames, 'Frames:' says {frames}"
                        + (" (truncated?)" if len(rows) < frames else ""))
    motion = np.empty((frames, width))
    for frame, (number, text) in enumerate(rows):
        words = text.split()
        if len(words) != width:
            raise DataError(f"{path}: line {number}: {len(words)} values, expected {width} (one per channel)")
        try:
            motion[frame] = np.array(words, dtype=np.float64)
        except ValueError:
            bad = next(word for word in words if not _is_number(word))
            raise DataError(f"{path}: line {number}: {printable(bad)[:40]!r} is not a number") from None
    bad = ~(np.abs(motion) <= MAX_VALUE)
    if bad.any():
        frame = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path}: line {rows[frame][0]}: a value is not a finite number within +-{MAX_VALUE:g}")
    return frame_time, motion


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def read_bvh(path) -> Bvh:
    """Read and check a BVH file; one DataError line naming the file (and the line) if it is malformed."""
    data = read_limited(path, MAX_BYTES, "a BVH motion capture file", "split the recording", DataError)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text file (byte {error.start} is not UTF-8); expected a BVH file") from None
    lines = list(enumerate(text.splitlines(), start=1))
    motion_at = next((index for index, (_, line) in enumerate(lines) if line.split()[:1] == ["MOTION"]), None)
    tokens = _Tokens(path, lines if motion_at is None else lines[:motion_at])
    if not tokens.words or tokens.words[0][0] != "HIERARCHY":
        raise DataError(f"{path}: does not start with HIERARCHY; expected a BVH file")
    names, parents, offsets, channels = _parse_hierarchy(tokens)
    if motion_at is None:
        raise DataError(f"{path}: no MOTION section after the hierarchy (truncated?)")
    if lines[motion_at][1].split() != ["MOTION"]:
        raise DataError(f"{path}: line {lines[motion_at][0]}: expected 'MOTION' alone on its line")
    width = sum(len(point) for point in channels)
    frame_time, motion = _parse_motion(path, lines[motion_at + 1:], width, len(names))
    return Bvh(str(path), names, parents, offsets, channels, frame_time, motion)
