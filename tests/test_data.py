"""Safe loading, validation and preparation of VideoPose3D-format archives."""
from pathlib import Path

import numpy as np
import pytest

import archive_factory as factory
from iivformer import archives, prepare, skeleton
from iivformer.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "eval_fixture"


def test_preparation_matches_the_published_pipeline():
    prepared = prepare.prepare(FIXTURE / "data_3d_h36m.npz", FIXTURE / "data_2d_h36m_fixture.npz")
    expected = np.load(FIXTURE / "expected_preparation.npz")
    # the published statistics are (joint, camera-major coordinate) = (17, 8); ours are (view, joint, 2)
    mean = prepared.normalization.mean.transpose(1, 0, 2).reshape(17, 8)
    std = prepared.normalization.std.transpose(1, 0, 2).reshape(17, 8)
    np.testing.assert_allclose(mean, expected["norm_mean"], rtol=1e-4)
    np.testing.assert_allclose(std, expected["norm_std"], rtol=1e-4)
    assert len(prepared.train) == int(expected["train_frames"])
    assert len(prepared.test) == int(expected["test_frames"])


def test_prepared_arrays_follow_the_data_flow(tmp_path):
    positions_3d, positions_2d = factory.positions(seed=1)
    path_3d, path_2d = factory.write(tmp_path, positions_3d, positions_2d)
    prepared = prepare.prepare(path_3d, path_2d, keep_archives=True)
    test = prepared.test
    assert test.inputs.shape == (len(test), 4, 17, 2) and test.inputs.dtype == np.float32
    assert test.targets.shape == (len(test), 1, 17, 3) and test.targets.dtype == np.float32
    assert len(test) == sum(len(positions_3d[s][k]) for s in ("S9", "S11") for k in factory.KEYS)

    # sample i traces back to its recording and frame; targets are 17 joints, mm, root-relative
    index = len(test) - 5
    subject, key, frame = test.subjects[index], test.recordings[index], test.frame_index[index]
    assert (subject, key) == ("S11", "Sitting 1") and test.actions[index] == "Sitting"
    pose_mm = positions_3d[subject][key][frame][list(skeleton.KEPT_32_TO_17)] * 1000
    np.testing.assert_allclose(test.targets[index, 0], pose_mm - pose_mm[0], atol=1e-3)
    assert np.all(test.targets[:, 0, 0] == 0)

    # inputs are the 4 views stacked in camera order, normalised with training statistics only
    pixels = prepared.normalization.invert(test.inputs[index])
    for view in range(4):
        np.testing.assert_allclose(pixels[view], positions_2d[subject][key][view][frame], rtol=1e-5)
    train_pixels = prepared.normalization.invert(prepared.train.inputs)
    np.testing.assert_allclose(prepared.normalization.mean, train_pixels.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(prepared.normalization.std, train_pixels.std(axis=0), rtol=1e-4)


def test_validation_subjects_come_out_of_training(tmp_path):
    path_3d, path_2d = factory.write(tmp_path, *factory.positions())
    prepared = prepare.prepare(path_3d, path_2d, train_subjects=("S1", "S5", "S6", "S7"), val_subjects=("S8",))
    assert set(prepared.val.subjects) == {"S8"} and "S8" not in set(prepared.train.subjects)
    with pytest.raises(DataError, match="training and test subjects overlap: S9"):
        prepare.prepare(path_3d, path_2d, train_subjects=("S1", "S9"))


def test_trailing_2d_frames_are_trimmed(tmp_path):
    positions_3d, positions_2d = factory.positions(extra_2d=7)
    loaded = archives.load_archives(*factory.write(tmp_path, positions_3d, positions_2d))
    stacked = loaded.positions_2d["S1"]["Walking"]
    assert stacked.shape == (len(positions_3d["S1"]["Walking"]), 4, 17, 2)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    positions_3d, positions_2d = factory.positions()
    positions_3d["S1"]["Walking"] = factory.RunsCode(marker)
    path_3d, path_2d = factory.write(tmp_path, positions_3d, positions_2d)
    with pytest.raises(DataError, match=r"refused to load the pickled object posix\.system"):
        archives.load_positions_3d(path_3d)
    metadata = dict(factory.METADATA, layout_name=factory.RunsCode(marker))
    path_3d, path_2d = factory.write(tmp_path, *factory.positions(), metadata=metadata)
    with pytest.raises(DataError, match="refused"):
        archives.load_positions_2d(path_2d)
    assert not marker.exists()


def _broken(which, mutate):
    """A builder of an archive pair whose 3D (which=0) or 2D (which=1) dictionary is mutated."""
    def build(tmp_path):
        trees = factory.positions()
        mutate(trees[which])
        return factory.write(tmp_path, *trees)
    return build


def _break_3d(mutate):
    return _broken(0, mutate)


def _break_2d(mutate):
    return _broken(1, mutate)


def _set(path, value):
    def mutate(tree):
        node = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(node[path[-1]]) if callable(value) else value
    return mutate


MALFORMED = {
    "three cameras": (_break_2d(_set(("S5", "Walking"), lambda v: v[:3])),
                      r"data_2d_h36m_test.npz, subject S5, recording 'Walking': 2D for 3 cameras, expected 4"),
    "five cameras": (_break_2d(_set(("S5", "Walking"), lambda v: v + v[:1])), "2D for 5 cameras, expected 4"),
    "short 2D": (_break_2d(_set(("S9", "Walking 1", 2), lambda v: v[:5])),
                 r"subject S9, recording 'Walking 1', camera 2: 5 frames of 2D for 1\d frames of 3D"),
    "33 joints in 3D": (_break_3d(_set(("S1", "Walking"), lambda v: np.zeros((4, 33, 3), np.float32))),
                        r"subject S1, recording 'Walking': 3D poses have shape \(4, 33, 3\)"),
    "16 joints in 2D": (_break_2d(_set(("S1", "Walking", 0), lambda v: v[:, :16])),
                        r"camera 0: 2D keypoints have shape \(\d+, 16, 2\), expected \(frames, 17, 2\)"),
    "NaN in 3D": (_break_3d(_set(("S6", "Sitting 1"), lambda v: np.where(np.arange(32)[:, None] == 3, np.nan, v))),
                  r"subject S6, recording 'Sitting 1': \d+ non-finite values"),
    "infinity in 2D": (_break_2d(_set(("S7", "Walking", 1), lambda v: np.full_like(v, np.inf))),
                       r"subject S7, recording 'Walking', camera 1: \d+ non-finite values"),
    "strings in 2D": (_break_2d(_set(("S7", "Walking", 1), lambda v: v.astype(str))), "expected numbers, found dtype"),
    "rank 2 in 3D": (_break_3d(_set(("S1", "Walking"), lambda v: v.reshape(len(v), -1))),
                     r"expected a \(frames, 32, 3\) array, found shape"),
    "missing 2D action": (_break_2d(lambda tree: tree["S8"].pop("Sitting 1")),
                          r"subject S8, recording 'Sitting 1': no 2D detections for this 3D recording"),
    "missing 2D subject": (_break_2d(lambda tree: tree.pop("S11")), r"subject S11 is missing"),
    "missing 3D subject": (_break_3d(lambda tree: tree.pop("S9")), r"data_3d_h36m.npz: subject S9 is missing"),
    "not a dictionary": (_break_2d(lambda tree: tree["S1"].__setitem__("Walking", "oops")),
                         "expected a list of 4 camera arrays, found str"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_archives_get_one_line_errors(tmp_path, case):
    build, message = MALFORMED[case]
    path_3d, path_2d = build(tmp_path)
    with pytest.raises(DataError, match=message) as caught:
        prepare.prepare(path_3d, path_2d)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"this is not a zip archive at all" * 10, "not an .npz archive"),
])
def test_non_archives_are_refused(tmp_path, content, message):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        archives.read_npz(path)


def test_truncated_and_missing_files_are_refused(tmp_path):
    path_3d, _ = factory.write(tmp_path, *factory.positions())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path_3d.read_bytes()[: path_3d.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.npz: "):
        archives.load_positions_3d(truncated)
    with pytest.raises(DataError, match="nowhere.npz: file not found"):
        archives.load_positions_3d(tmp_path / "nowhere.npz")


def test_missing_key_is_named(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, poses=np.zeros(3))
    with pytest.raises(DataError, match=r"other.npz: missing key 'positions_3d' \(found: poses\)"):
        archives.load_positions_3d(path)


def test_find_archives_prefers_real_data(tmp_path):
    assert archives.find_archives(tmp_path) is None
    synthetic = tmp_path / "synthetic" / "tiny"
    synthetic.mkdir(parents=True)
    factory.write(synthetic, *factory.positions(), name_2d="data_2d_h36m_synthetic.npz")
    assert archives.find_archives(tmp_path)[2] == "synthetic"
    factory.write(tmp_path, *factory.positions(), name_2d="data_2d_h36m_cpn_ft_h36m_dbb.npz")
    path_3d, path_2d, kind = archives.find_archives(tmp_path)
    assert kind == "Human3.6M" and path_2d.name == "data_2d_h36m_cpn_ft_h36m_dbb.npz"
