"""The synthetic Human3.6M: archive format, exact projection, detector error, kinematics,
action-specific motion, cameras' fields of view, byte-identical reproducible files."""
import hashlib
import os

import numpy as np
import pytest

from iivformer import cameras, skeleton, synthetic
from iivformer.errors import IIVFormerError

LONGER = synthetic.Preset("test-longer", 250, 300)  # long enough for every action to show itself


@pytest.fixture(scope="module")
def tiny():
    return synthetic.make_recordings("tiny", seed=0)


@pytest.fixture(scope="module")
def longer():
    return synthetic.make_recordings(LONGER, seed=0)


@pytest.fixture(scope="module")
def exact(tiny):
    return synthetic.make_detections(tiny, seed=0, detector_noise=0)


@pytest.fixture(scope="module")
def noisy(tiny):
    return synthetic.make_detections(tiny, seed=0)


def takes(recordings, action):
    return [(subject, key, positions) for subject, per_subject in recordings.items()
            for key, positions in per_subject.items() if skeleton.action_of(key) == action]


def test_presets_and_recording_lengths():
    assert {"tiny", "small", "full"} <= set(synthetic.PRESETS)
    with pytest.raises(Exception):
        synthetic.PRESETS["tiny"].min_frames = 1  # frozen
    full = synthetic._recording_lengths(synthetic.PRESETS["full"], 0)
    train = sum(n for (subject, _), n in full.items() if subject in skeleton.TRAIN_SUBJECTS)
    test = sum(n for (subject, _), n in full.items() if subject in skeleton.TEST_SUBJECTS)
    assert (train * 4, test * 4) == (1_559_752, 543_344)  # Human3.6M's frames over its 4 cameras
    assert 1000 <= min(full.values()) and max(full.values()) <= 6000 and np.std(list(full.values())) > 500
    small = synthetic._recording_lengths(synthetic.PRESETS["small"], 0)
    assert 80_000 < sum(small.values()) < 130_000


def test_keys_subjects_shapes(tiny):
    assert list(tiny) == list(skeleton.SUBJECTS)
    for subject, per_subject in tiny.items():
        expected = {name for action in skeleton.ACTIONS for name in (action, action + " 1")}
        if subject == "S11":
            expected.discard("Directions")
        assert set(per_subject) == expected
        assert len(per_subject) == (29 if subject == "S11" else 30)
        for positions in per_subject.values():
            assert positions.dtype == np.float32 and positions.ndim == 3 and positions.shape[1:] == (32, 3)
            assert 90 <= len(positions) <= 110 and np.isfinite(positions).all()


def test_detections_format(tiny, noisy):
    assert list(noisy) == list(tiny)
    extras = set()
    for subject, per_subject in tiny.items():
        assert set(noisy[subject]) == set(per_subject)
        for key, positions in per_subject.items():
            views = noisy[subject][key]
            assert isinstance(views, list) and len(views) == 4
            for view in views:
                assert view.dtype == np.float32 and view.shape[1:] == (17, 2) and np.isfinite(view).all()
                extras.add(len(view) - len(positions))
    assert extras <= set(range(6)) and len(extras) > 1


def test_exact_detections_are_the_distorted_projections(tiny, exact):
    for subject, per_subject in tiny.items():
        for key, positions in per_subject.items():
            joints = skeleton.to_17_joints(positions.astype(np.float64)) * 1000.0
            for camera, view in zip(cameras.cameras_for(subject), exact[subject][key]):
                np.testing.assert_allclose(view[:len(positions)], cameras.project(joints, camera), atol=1e-3, rtol=0)


def test_detector_error(tiny, exact, noisy):
    errors = np.concatenate([np.linalg.norm(noisy[s][k][c][:len(p)] - exact[s][k][c][:len(p)], axis=-1)
                             for s in tiny for k, p in tiny[s].items() for c in range(4)])
    assert 1.0 < np.median(errors) < 10.0
    assert 0.003 < (errors > 20).mean() < 0.03  # outliers and left/right swaps
    per_joint = errors.reshape(-1, 17)
    wrists_ankles = np.median(per_joint[:, [3, 6, 13, 16]])
    assert wrists_ankles > 1.5 * np.median(per_joint[:, [0, 7, 8]])
    again = synthetic.make_detections(tiny, seed=0)
    assert all(np.array_equal(a, b) for s in tiny for k in tiny[s] for a, b in zip(noisy[s][k], again[s][k]))


def test_bone_lengths_constant_and_subject_specific(tiny):
    means = {}
    for subject, per_subject in tiny.items():
        lengths = [skeleton.bone_lengths(p.astype(np.float64), skeleton.PARENTS_32) for p in per_subject.values()]
        for per_take in lengths:
            assert per_take.std(axis=0).max() < 1e-5
        means[subject] = np.mean([per_take.mean(0) for per_take in lengths], axis=0)
        assert np.abs(lengths[0].mean(0) - means[subject]).max() < 1e-5  # same body in every take
    subjects = list(means)
    for i, a in enumerate(subjects):
        for b in subjects[i + 1:]:
            assert np.abs(means[a] - means[b]).max() > 0.005, (a, b)
    heights = [tiny[s]["Posing"][:, 15, 2].max() + 0.03 for s in subjects]  # head top standing
    assert 1.5 < min(heights) and max(heights) < 1.95


def test_walking_travels(tiny, longer):
    for _, _, positions in takes(tiny, "Walking"):
        root = positions[:, 0, :2].astype(np.float64)
        assert np.linalg.norm(np.diff(root, axis=0), axis=1).sum() > 1.5
        assert np.linalg.norm(root - root[0], axis=1).max() > 1.0
    for action in ("Walking", "WalkDog", "WalkTogether"):
        for _, _, positions in takes(longer, action):
            assert np.linalg.norm(np.diff(positions[:, 0, :2], axis=0), axis=1).sum() > 3.0
            knees = positions[:, [2, 7], 0] - positions[:, [1, 6], 0]
            assert np.corrcoef(knees.T)[0, 1] < 0  # the legs alternate (in x, roughly)


def test_sitting_sits_and_walking_stands(longer):
    for subject in longer:
        walking = np.concatenate([p[:, 0, 2] for _, _, p in takes({subject: longer[subject]}, "Walking")])
        sitting = np.concatenate([p for _, _, p in takes({subject: longer[subject]}, "Sitting")])
        assert np.median(walking) > 0.8
        assert (sitting[:, 0, 2] < 0.6).mean() > 0.9 and 0.4 < np.median(sitting[:, 0, 2]) < 0.6
        assert np.median(np.abs(sitting[:, [2, 7], 2] - sitting[:, [1, 6], 2])) < 0.08  # thighs level
        down = np.concatenate([p[:, 0, 2] for _, _, p in takes({subject: longer[subject]}, "SittingDown")])
        assert down.max() - down.min() > 0.25  # sits down and gets up


def test_phoning_and_greeting(longer):
    on_the_phone = []
    for _, key, positions in takes(longer, "Phoning"):
        to_head = np.linalg.norm(positions[:, [19, 27]] - positions[:, [14]], axis=-1).min(1)
        on_the_phone.append((to_head < 0.25).mean())
        assert on_the_phone[-1] > 0.1, key
    assert np.mean(on_the_phone) > 0.5
    above = np.concatenate([np.maximum(p[:, 19, 2] - p[:, 17, 2], p[:, 27, 2] - p[:, 25, 2])
                            for _, _, p in takes(longer, "Greeting")])
    assert 0.05 < (above > 0.15).mean() < 0.8
    to_mouth = [np.linalg.norm(p[:, [19, 27]] - p[:, [14]], axis=-1).min() for _, _, p in
                takes(longer, "Eating") + takes(longer, "Smoking")]  # a few seconds each: most take a bite or puff
    assert np.mean(np.array(to_mouth) < 0.25) > 0.75


def test_feet_on_the_floor_and_smooth(longer):
    for _, key, positions in [item for per in skeleton.ACTIONS for item in takes(longer, per)]:
        lowest_ankle = positions[:, [3, 8], 2].min(1)
        assert 0.04 < lowest_ankle.min() and lowest_ankle.max() < 0.16, key
        assert positions[..., 2].min() > -0.005, key
        assert (positions[:, 15, 2] > positions[:, 0, 2]).all(), key  # head above hips
        step = np.linalg.norm(np.diff(positions, axis=0), axis=-1)
        assert step.max() < 0.2, key  # < 10 m/s at 50 fps: no jumps


def test_every_joint_inside_every_image(longer):
    for subject, per_subject in longer.items():
        for camera in cameras.cameras_for(subject):
            for key, positions in per_subject.items():
                pixels = cameras.project(positions.astype(np.float64) * 1000.0, camera)
                assert (pixels > 0).all() and (pixels[..., 0] < camera.res_w).all(), (subject, key, camera.id)
                assert (pixels[..., 1] < camera.res_h).all(), (subject, key, camera.id)


def test_write_is_reproducible_and_round_trips(tmp_path, tiny, noisy):
    first = synthetic.write_dataset(tmp_path / "a", "tiny", seed=0, progress=False)
    second = synthetic.write_dataset(tmp_path / "b", "tiny", seed=0, progress=False)
    other = synthetic.write_dataset(tmp_path / "c", "tiny", seed=1, progress=False)
    assert [os.path.basename(p) for p in first] == ["data_3d_h36m.npz", "data_2d_h36m_synthetic.npz"]
    for a, b, c in zip(first, second, other):
        assert open(a, "rb").read() == open(b, "rb").read()
        assert open(a, "rb").read() != open(c, "rb").read()
    assert sorted(os.listdir(tmp_path / "a")) == ["data_2d_h36m_synthetic.npz", "data_3d_h36m.npz"]  # no temporaries

    with np.load(first[0], allow_pickle=True) as archive:
        assert archive.files == ["positions_3d"]
        positions_3d = archive["positions_3d"].item()
    with np.load(first[1], allow_pickle=True) as archive:
        assert sorted(archive.files) == ["metadata", "positions_2d"]
        positions_2d = archive["positions_2d"].item()
        assert archive["metadata"].item() == {"layout_name": "h36m", "num_joints": 17,
                                              "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]],
                                              "positions_3d_sha256": hashlib.sha256(open(first[0], "rb").read()).hexdigest()}
    assert list(positions_3d) == list(tiny)
    for subject in tiny:
        for key in tiny[subject]:
            assert np.array_equal(positions_3d[subject][key], tiny[subject][key])
            assert all(np.array_equal(a, b) for a, b in zip(positions_2d[subject][key], noisy[subject][key]))


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "data_3d_h36m.npz"
    with pytest.raises(Exception):
        synthetic._save_npz(str(target), {"positions_3d": {"S1": lambda: None}}, True, False)
    assert os.listdir(tmp_path) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(IIVFormerError, match="preset"):
        synthetic.make_recordings("huge", 0)
    with pytest.raises(IIVFormerError, match="seed"):
        synthetic.write_dataset(tmp_path, "tiny", seed=-1, progress=False)
    with pytest.raises(IIVFormerError, match="detector_noise"):
        synthetic.write_dataset(tmp_path, "tiny", seed=0, detector_noise=-1.0, progress=False)
    assert os.listdir(tmp_path) == []
