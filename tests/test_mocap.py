"""`iivformer import-bvh`: the BVH parser, the CMU clips as archives, units, up axis, mappings, errors."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from iivformer import cameras, mocap, skeleton
from iivformer.bvh import read_bvh
from iivformer.cli import main
from iivformer.errors import DataError
from iivformer.npz import read_npz
from iivformer.rig import h36m_rig

CLIPS = {path.stem: path for path in mocap.cmu_clips()}
WALKS, HOP = ("cmu_scaled_131_01", "cmu_scaled_131_03"), "cmu_scaled_131_02"
J = skeleton.JOINT_INDEX


def run(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse: a bad flag
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *fragments):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The three CMU clips imported through the command line (exact projections)."""
    out = tmp_path_factory.mktemp("cmu")
    code = main(["import-bvh", *map(str, CLIPS.values()), "--out", str(out)])
    assert code == 0
    path_3d, path_2d = out / "data_3d_h36m.npz", out / "data_2d_h36m_mocap.npz"
    positions_3d = read_npz(path_3d)["positions_3d"]["S9"]
    positions_2d = read_npz(path_2d)["positions_2d"]["S9"]
    return path_3d, path_2d, positions_3d, positions_2d


def recording(positions_3d, stem):
    (name,) = [name for name in positions_3d if name.endswith(" " + stem)]
    return positions_3d[name]


# ------------------------------------------------------------------------------ the parser

def _independent_positions(text: str, frames) -> np.ndarray:
    """Positions of every point (end sites included, file order) by quaternions, frame by frame."""
    words, points, stack, at = text.split(), [], [], 1  # after HIERARCHY
    while words[at] != "MOTION":
        word = words[at]
        if word in ("ROOT", "JOINT", "End"):
            points.append({"parent": stack[-1] if stack else None, "channels": []})
            at += 2
        elif word == "{":
            stack.append(len(points) - 1)
            at += 1
        elif word == "}":
            stack.pop()
            at += 1
        elif word == "OFFSET":
            points[-1]["offset"] = np.array(words[at + 1:at + 4], float)
            at += 4
        else:  # CHANNELS
            count = int(words[at + 1])
            points[-1]["channels"] = words[at + 2:at + 2 + count]
            at += 2 + count
    width = sum(len(point["channels"]) for point in points)
    motion = np.array(words[at + 6:], float).reshape(-1, width)

    def multiply(a, b):
        w1, v1, w2, v2 = a[0], a[1:], b[0], b[1:]
        return np.concatenate([[w1 * w2 - v1 @ v2], w1 * v2 + w2 * v1 + np.cross(v1, v2)])

    def rotate(q, v):
        return multiply(multiply(q, np.concatenate([[0.0], v])), q * [1, -1, -1, -1])[1:]

    result = []
    for frame in frames:
        values, column, world = motion[frame], 0, []
        for point in points:
            local, turn = point["offset"].copy(), np.array([1.0, 0, 0, 0])
            for channel in point["channels"]:
                axis = "XYZ".index(channel[0])
                if channel.endswith("position"):
                    local[axis] = values[column]
                else:
                    half = np.radians(values[column]) / 2
                    step = np.zeros(4)
                    step[0], step[1 + axis] = np.cos(half), np.sin(half)
                    turn = multiply(turn, step)
                column += 1
            if point["parent"] is None:
                world.append((local, turn))
            else:
                place, parent_turn = world[point["parent"]]
                world.append((place + rotate(parent_turn, local), multiply(parent_turn, turn)))
        result.append([place for place, _ in world])
    return np.array(result)


def _shuffled_rotation_orders(text: str, seed: int) -> str:
    """The same file with every joint's rotation channels in a random order (values kept per column)."""
    rng = np.random.default_rng(seed)

    def shuffle(match):
        names = match.group(2).split()
        rotations = [name for name in names if name.endswith("rotation")]
        order = iter(rng.permutation(rotations))
        return match.group(1) + " ".join(next(order) if name.endswith("rotation") else name for name in names)

    return re.sub(r"(CHANNELS \d+ )([^\n]+)", shuffle, text)


def test_forward_kinematics_agrees_with_quaternions_in_any_rotation_order(tmp_path):
    text = CLIPS[HOP].read_text()
    shuffled = tmp_path / "shuffled.bvh"
    shuffled.write_text(_shuffled_rotation_orders(text, 0))
    bvh = read_bvh(shuffled)
    assert len({channels for channels in bvh.channels if len(channels) == 3}) > 3  # several orders now
    frames = [0, 333, 777, 1247]
    for path in (CLIPS[HOP], shuffled):
        expected = _independent_positions(Path(path).read_text(), frames)
        assert np.abs(read_bvh(path).positions()[frames] - expected).max() < 1e-9


def test_rotation_channels_apply_in_the_order_written(tmp_path):
    def endpoint(order):
        path = tmp_path / f"{order}.bvh"
        path.write_text(f"HIERARCHY\nROOT a\n{{\nOFFSET 0 0 0\nCHANNELS 3 {order}\nEnd Site\n{{\nOFFSET 0 1 0\n}}\n}}\n"
                        "MOTION\nFrames: 1\nFrame Time: 0.01\n90 90 0\n")
        return read_bvh(path).positions()[0, 1]

    # R = R_first R_second: the second rotation acts on the offset first
    assert np.allclose(endpoint("Yrotation Xrotation Zrotation"), [1, 0, 0], atol=1e-12)  # Ry(90) Rx(90) (0,1,0)
    assert np.allclose(endpoint("Xrotation Yrotation Zrotation"), [0, 0, 1], atol=1e-12)  # Rx(90) Ry(90) (0,1,0)
    assert np.allclose(endpoint("Zrotation Yrotation Xrotation"), [-1, 0, 0], atol=1e-12)  # Rz(90) Ry(90) (0,1,0)


# ------------------------------------------------------------------------------ the CMU clips

def test_the_archives_pass_check_and_evaluate(imported, capsys):
    path_3d, path_2d, positions_3d, _ = imported
    assert sorted(positions_3d) == ["Hopping cmu_scaled_131_02", "Walking cmu_scaled_131_01",
                                    "Walking cmu_scaled_131_03"]
    assert all(array.shape[1:] == (17, 3) and array.dtype == np.float32 for array in positions_3d.values())
    code, out, _ = run(["check", "--data_3d", path_3d, "--data_2d", path_2d], capsys)
    assert code == 0 and out.strip().endswith("ok") and "1 subjects, 2 actions, 4 cameras" in out
    code, out, _ = run(["evaluate", "--method", "triangulation", "--data_3d", path_3d, "--data_2d", path_2d,
                        "--subjects", "S9"], capsys)
    assert code == 0
    table = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()
             if line.split() and line.split()[0] in ("Walking", "Hopping")}
    assert set(table) == {"Walking", "Hopping"} and max(table.values()) < 0.01  # exact 2D: exact triangulation


def test_bone_lengths_are_constant(imported):
    for name, positions in imported[2].items():
        spread = skeleton.bone_lengths(positions.astype(np.float64)).std(axis=0)
        assert spread.max() < 1e-3, (name, spread.round(5))  # metres


def test_the_walks_cross_the_room_at_walking_speed_and_the_hop_hops(imported):
    positions_3d = imported[2]
    for stem in WALKS + (HOP,):
        root = recording(positions_3d, stem)[:, J["Hip"], :2].astype(np.float64)
        second = skeleton.FPS
        speed = np.linalg.norm(root[second:] - root[:-second], axis=1).max()  # over 1 s of walking
        span = np.ptp(root, axis=0).max()
        hops = _both_feet_up(recording(positions_3d, stem))
        if stem in WALKS:
            assert 0.8 < speed < 2.0 and span > 2.5 and len(hops) <= 5, (stem, speed, span, len(hops))
        else:
            assert speed < 0.5 and len(hops) >= 8 and 0.04 < np.median(hops) < 0.15, (stem, speed, hops)


def _both_feet_up(positions, rise=0.03, shortest=3) -> list:
    """Heights (m) of the moments, at least `shortest` frames long, when both ankles are `rise` above
    their usual standing height: a hop lifts both feet, a walk keeps one on the floor."""
    lower = np.minimum(positions[:, J["LFoot"], 2], positions[:, J["RFoot"], 2]).astype(np.float64)
    above = lower - np.percentile(lower, 10)
    edges = np.diff(np.concatenate([[0], (above > rise).astype(int), [0]]))
    return [above[start:end].max() for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))
            if end - start >= shortest]


def test_people_stand_on_the_floor_head_up_facing_where_they_walk(imported):
    for name, positions in imported[2].items():
        positions = positions.astype(np.float64)
        feet = np.minimum(positions[:, J["LFoot"], 2], positions[:, J["RFoot"], 2])
        assert 0.03 < np.median(feet) < 0.15 and positions[..., 2].min() > 0.02, name  # ankles above the floor
        assert (positions[:, J["Head"], 2] > positions[:, J["Thorax"], 2]).all()
        assert (positions[:, J["Thorax"], 2] > positions[:, J["Hip"], 2]).all()
        if name.startswith("Walking"):  # a mirrored person would face backwards
            left = positions[:, J["LHip"]] - positions[:, J["RHip"]]
            facing = np.cross(left, [0, 0, 1])[:, :2]
            velocity = np.gradient(positions[:, J["Hip"], :2], axis=0) * skeleton.FPS
            moving = np.linalg.norm(velocity, axis=1) > 0.5
            assert (np.sum(facing[moving] * velocity[moving], axis=1) > 0).mean() > 0.75, name


def test_exact_2d_is_the_3d_seen_by_the_cameras(imported):
    _, _, positions_3d, positions_2d = imported
    for name, positions in positions_3d.items():
        for camera, uv in zip(h36m_rig("S9").cameras, positions_2d[name]):
            expected = cameras.project(positions.astype(np.float64) * 1000.0, camera)
            assert np.abs(uv[:len(positions)] - expected).max() < 0.01
            assert (uv >= 0).all() and (uv <= [camera.res_w, camera.res_h]).all()


# ------------------------------------------------------------------------------ units, up axis, mapping

def _rescaled(text: str, factor: float) -> str:
    """The file with every length (OFFSETs and position channels) multiplied by `factor`."""
    head, motion = text.split("MOTION")
    head = re.sub(r"OFFSET\s+(\S+)\s+(\S+)\s+(\S+)",
                  lambda m: "OFFSET " + " ".join(repr(float(v) * factor) for v in m.groups()), head)
    channels = [name for group in re.findall(r"CHANNELS \d+ ([^\n]+)", head) for name in group.split()]
    lengths = np.array([name.endswith("position") for name in channels])
    lines = motion.strip().splitlines()
    rows = np.array([line.split() for line in lines[2:]], float)
    rows[:, lengths] *= factor
    body = "\n".join(" ".join(repr(float(value)) for value in row) for row in rows)
    return head + "MOTION\n" + "\n".join(lines[:2]) + "\n" + body + "\n"


@pytest.mark.parametrize("unit", ["cm", "mm", "in"])
def test_the_same_3d_whatever_the_unit(tmp_path, unit):
    path = tmp_path / CLIPS[WALKS[0]].name
    path.write_text(_rescaled(CLIPS[WALKS[0]].read_text(), 1 / mocap.UNITS[unit]))
    clip, metres = mocap.read_clip(path), mocap.read_clip(CLIPS[WALKS[0]])
    assert clip.unit == unit and metres.unit == "m"
    assert np.abs(clip.positions - metres.positions).max() < 1e-6  # 1e-3 mm
    assert np.abs(mocap.read_clip(path, units=unit).positions - metres.positions).max() < 1e-6


def test_no_plausible_unit_is_one_line(tmp_path, capsys):
    path = tmp_path / "giant.bvh"
    path.write_text(_rescaled(CLIPS[HOP].read_text(), 7.0))
    code, _, err = run(["import-bvh", path, "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, str(path), "no unit", "--units")
    code, _, err = run(["import-bvh", CLIPS[HOP], "--out", tmp_path / "out", "--up", "z"], capsys)
    one_line_error(code, err, str(CLIPS[HOP]), "with --up z the head is", "check --up")
    assert not (tmp_path / "out").exists()


def test_z_up_is_a_rotation_of_y_up(tmp_path):
    rotation = mocap.UP_AXES["y"]
    assert np.allclose(rotation @ rotation.T, np.eye(3)) and np.isclose(np.linalg.det(rotation), 1.0)
    assert np.allclose(rotation @ [0, 1, 0], [0, 0, 1])
    # the same recording written Z-up: under a parent joint turned +90 degrees about X (the floor is set by the feet)
    text = CLIPS[HOP].read_text()
    head, motion = text.split("MOTION")
    wrapped = head.replace("HIERARCHY\nROOT", "HIERARCHY\nROOT World\n{\nOFFSET 0 0 100\nCHANNELS 1 Xrotation\nJOINT", 1)
    lines = motion.strip().splitlines()
    wrapped += "}\nMOTION\n" + "\n".join(lines[:2]) + "\n" + "\n".join("90 " + line for line in lines[2:]) + "\n"
    path = tmp_path / "z_up.bvh"
    path.write_text(wrapped)
    assert np.abs(mocap.read_clip(path, up="z").positions - mocap.read_clip(CLIPS[HOP]).positions).max() < 1e-9
    with pytest.raises(DataError, match="check --up"):
        mocap.read_clip(path, up="y")


def test_a_mapping_file_reproduces_the_built_in_cmu_mapping(tmp_path, imported, capsys):
    mapping = tmp_path / "cmu.json"
    mapping.write_text(json.dumps(mocap.CMU_MAPPING))
    code, out, _ = run(["import-bvh", *CLIPS.values(), "--out", tmp_path / "out", "--mapping", mapping], capsys)
    assert code == 0 and "wrote" in out
    again = read_npz(tmp_path / "out" / "data_3d_h36m.npz")["positions_3d"]["S9"]
    assert all(np.array_equal(again[name], imported[2][name]) for name in imported[2])
    between = dict(mocap.CMU_MAPPING, Spine={"between": ["lowerback", "Chest2"], "at": 0.5})
    bvh = read_bvh(CLIPS[HOP])
    points = bvh.positions()[:5]
    spine = mocap.map_joints(bvh, points, between, "test")[:, J["Spine"]]
    assert np.allclose(spine, (points[:, bvh.index("lowerback")] + points[:, bvh.index("Chest2")]) / 2)


@pytest.mark.parametrize("mapping, fragment", [
    ({k: v for k, v in mocap.CMU_MAPPING.items() if k != "Head"}, "missing: Head"),
    (dict(mocap.CMU_MAPPING, Tail="Hips"), "unknown: Tail"),
    (dict(mocap.CMU_MAPPING, Head={"between": ["Neck"]}), "Head: expected"),
    (dict(mocap.CMU_MAPPING, Head="Skull"), "no joint 'Skull'"),
    ([1, 2], "one entry for each"),
])
def test_bad_mappings_are_one_line(tmp_path, capsys, mapping, fragment):
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(mapping))
    code, _, err = run(["import-bvh", CLIPS[HOP], "--out", tmp_path, "--mapping", path], capsys)
    one_line_error(code, err, fragment)


def test_another_rig_and_subject(tmp_path, capsys):
    out = tmp_path / "rig"
    code, out_text, _ = run(["import-bvh", CLIPS[HOP], "--out", out, "--rig", "h36m:S11", "--subject", "P1",
                             "--action", "Hop", "--detector_noise", "3", "--seed", "5"], capsys)
    assert code == 0 and "'Hop cmu_scaled_131_02'" in out_text
    metadata = read_npz(out / "data_2d_h36m_mocap.npz")["metadata"]
    assert metadata["rig"]["name"] == "h36m:S11"
    code, out_text, _ = run(["check", "--data_3d", out / "data_3d_h36m.npz",
                             "--data_2d", out / "data_2d_h36m_mocap.npz"], capsys)
    assert code == 0 and "P1" in out_text


# ------------------------------------------------------------------------------ errors

HEADER = "HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation\n"
LEAF = "JOINT Leg\n{\nOFFSET 0 -1 0\nCHANNELS 3 Zrotation Yrotation Xrotation\nEnd Site\n{\nOFFSET 0 -1 0\n}\n}\n}\n"
GOOD = HEADER + LEAF + "MOTION\nFrames: 2\nFrame Time: 0.01\n" + "0 1 0 0 0 0 0 0 0\n" * 2


@pytest.mark.parametrize("text, fragments", [
    (GOOD.replace("JOINT Leg", "JOINTS Leg"), ["line 6", "expected 'JOINT', 'End Site' or '}'"]),
    (GOOD.replace("CHANNELS 3 Zrotation Yrotation Xrotation", "CHANNELS 3 Zrotation Yrotation"),
     ["line 10", "unknown channel 'End'"]),
    (GOOD.replace("CHANNELS 3 Zrotation", "CHANNELS 3 Wrotation"), ["line 9", "unknown channel 'Wrotation'"]),
    (GOOD.replace("CHANNELS 3", "CHANNELS 9"), ["line 9", "0 to 6 channel names"]),
    (GOOD.replace("Frames: 2", "Frames: 3"), ["line 20", "holds 2 frames, 'Frames:' says 3", "truncated"]),
    (GOOD[:-2], ["line 20", "8 values, expected 9"]),
    (GOOD.replace("0 1 0 0 0 0 0 0 0\n", "0 1 0 0 zero 0 0 0 0\n", 1), ["line 19", "'zero' is not a number"]),
    (GOOD.replace("0 1 0 0 0 0 0 0 0\n", "0 1 0 0 nan 0 0 0 0\n", 1), ["line 19", "not a finite number"]),
    (GOOD.replace("OFFSET 0 -1 0", "OFFSET 0 -1e300 0", 1), ["line 8", "OFFSET -1e300"]),
    (GOOD.replace("Frames: 2", "Frames: 999999999"), ["line 17", "expected 1 to"]),
    (GOOD.replace("Frame Time: 0.01", "Frame Time: 0"), ["line 18", "Frame Time 0 s"]),
    (GOOD.replace("OFFSET 0 0 0", "OFFSET 0 0"), ["line 5", "OFFSET should be a number, found 'CHANNELS'"]),
    (GOOD.split("MOTION")[0], ["no MOTION section"]),
    (GOOD.split("End Site")[0], ["the hierarchy ends early"]),
    (GOOD.replace("HIERARCHY", "HIERARCHIE"), ["does not start with HIERARCHY"]),
    (GOOD.replace("JOINT Leg", "JOINT Hips"), ["line 6", "'Hips' is used twice"]),
    (GOOD.replace("}\nMOTION", "}\nROOT Other\nMOTION"), ["only one ROOT"]),
    (HEADER + LEAF * 2000, ["the hierarchy goes on past"]),
])
def test_malformed_bvh_files_are_one_line(tmp_path, capsys, text, fragments):
    path = tmp_path / "broken.bvh"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_bvh(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert all(fragment in message for fragment in fragments), message
    code, _, err = run(["import-bvh", path, "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, str(path))


def test_the_small_good_file_reads(tmp_path):
    path = tmp_path / "good.bvh"
    path.write_text(GOOD)
    bvh = read_bvh(path)
    assert bvh.names == ("Hips", "Leg", "Leg/end") and bvh.frames == 2 and bvh.fps == pytest.approx(100)
    assert np.allclose(bvh.positions()[0], [[0, 1, 0], [0, 0, 0], [0, -1, 0]])


def test_files_that_are_not_bvh_are_one_line(tmp_path, capsys):
    binary, empty = tmp_path / "binary.bvh", tmp_path / "empty.bvh"
    binary.write_bytes(b"\xff\xfe\x00HIERARCHY")
    empty.write_bytes(b"")
    for path, fragment in ((binary, "not a text file"), (empty, "file is empty"), (tmp_path, "not a regular file"),
                           (tmp_path / "missing.bvh", "file not found")):
        code, _, err = run(["import-bvh", path, "--out", tmp_path / "out"], capsys)
        one_line_error(code, err, fragment)


@pytest.mark.parametrize("flags, fragment", [
    (["--units", "km"], "invalid choice: 'km'"),
    (["--up", "x"], "invalid choice: 'x'"),
    (["--detector_noise", "-1"], "must be a number >= 0"),
    (["--detector_noise", "1000"], "detector_noise must be between 0 and 200"),
    (["--seed", "-3"], "--seed"),
    (["--action", "Walk ing"], "an action is 1-40 letters"),
    (["--action", "A,B"], "one for each of the 1 files, not 2"),
    (["--subject", "S99"], "no built-in Human3.6M rig"),
    (["--subject", "S 9"], "a subject is 1-40 letters"),
    (["--rig", "h36m:S99"], "--rig h36m:S99"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, flags, fragment):
    code, _, err = run(["import-bvh", CLIPS[HOP], "--out", tmp_path / "out", *flags], capsys)
    one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists()


def test_outputs_are_checked_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(["import-bvh", CLIPS[HOP], "--out", blocker / "out"], capsys)
    one_line_error(code, err, "is not a folder")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data_3d_h36m.npz").mkdir()
    code, _, err = run(["import-bvh", CLIPS[HOP], "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, "is a folder")
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "cmu_scaled_131_02.bvh").write_text(CLIPS[HOP].read_text())
    code, _, err = run(["import-bvh", CLIPS[HOP], twice / "cmu_scaled_131_02.bvh", "--out", tmp_path / "o2"], capsys)
    one_line_error(code, err, "a second recording named 'Hopping cmu_scaled_131_02'")
