"""Baselines: linear triangulation recovers exact projections from any 2 or more views and agrees
with an independent solver; the mean pose is what ignoring the input gives; both as --method."""
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from iivformer import baselines, cameras, metrics, prepare, synthetic
from iivformer.errors import IIVFormerError


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exact")
    return synthetic.write_dataset(folder, preset="tiny", seed=3, detector_noise=0, progress=False)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noisy")
    return synthetic.write_dataset(folder, preset="tiny", seed=4, detector_noise=8.0, progress=False)


@pytest.mark.parametrize("views", [None] + [list(pair) for pair in itertools.combinations(range(4), 2)])
def test_triangulation_recovers_noise_free_poses_from_any_two_views(exact, views):
    evaluation = baselines.evaluate_method("triangulation", *exact, views=views)
    assert evaluation.per_action("p1")["mean"] < 0.5  # mm
    assert evaluation.provenance["views"] == (views or [0, 1, 2, 3]) and evaluation.provenance["checkpoint"] is None


def test_a_known_point_is_found_from_two_cameras():
    point = np.array([120.0, -340.0, 910.0])
    chosen = cameras.cameras_for("S9")[1:3]
    normalized = np.stack([cameras.world_to_camera(point, cam)[:2] / cameras.world_to_camera(point, cam)[2]
                           for cam in chosen])
    found = baselines.triangulate(normalized, np.stack([c.rotation for c in chosen]),
                                  np.stack([c.translation for c in chosen]))
    np.testing.assert_allclose(found, point, atol=1e-6)


def _independent_triangulation(split, views):
    """The same two rows per view, solved point by point with numpy's least-squares routine."""
    result = np.empty(split.targets[:, 0].shape)
    for index in range(len(split)):
        chosen = [cameras.cameras_for(str(split.subjects[index]))[v] for v in views]
        for joint in range(result.shape[1]):
            rows, values = [], []
            for view, cam in zip(views, chosen):
                x, y = cameras.undistort((split.inputs[index, view, joint] - cam.center) / cam.focal_length, cam)
                r = cam.rotation
                for row in (x * r[:, 2] - r[:, 0], y * r[:, 2] - r[:, 1]):
                    rows.append(row)
                    values.append(row @ cam.translation)
            result[index, joint] = np.linalg.lstsq(np.array(rows), np.array(values), rcond=None)[0]
    return result - result[:, :1]


def test_triangulation_agrees_with_an_independent_solver_per_action(noisy):
    identity = prepare.Normalization(np.zeros((1, 1, 2), np.float32), np.ones((1, 1, 2), np.float32))
    test = prepare.prepare(*noisy, train_subjects=(), normalization=identity).test
    chosen = test.subset(np.arange(0, len(test), 15))  # every 15th frame of every action
    for views in ([0, 1, 2, 3], [0, 3]):
        ours = baselines.triangulation(chosen, identity, views)
        reference = _independent_triangulation(chosen, views)
        for action in np.unique(chosen.actions):
            rows = chosen.actions == action
            targets = chosen.targets[rows, 0]
            assert metrics.mpjpe(ours[rows], targets) == pytest.approx(metrics.mpjpe(reference[rows], targets), abs=0.1)


def test_one_view_cannot_be_triangulated(exact):
    with pytest.raises(IIVFormerError, match=r"triangulation needs 2 or more views, not 1 \(\[2\]\)"):
        baselines.evaluate_method("triangulation", *exact, views=[2])


def test_mean_pose_repeats_the_training_mean(exact):
    prepared = prepare.prepare(*exact)
    predictions = baselines.mean_pose(prepared.train, prepared.test)
    np.testing.assert_allclose(predictions[0], prepared.train.targets[:, 0].mean(axis=0, dtype=np.float64), atol=1e-3)
    assert np.all(predictions == predictions[:1])


def test_baselines_of_loaded_archives_are_those_of_the_files(noisy, monkeypatch):
    """evaluate_baselines reads the archives once for both methods (paths), or not at all (loaded),
    with the same predictions and the same provenance as each method from the paths."""
    from iivformer.archives import load_archives

    reads = []
    monkeypatch.setattr(baselines, "load_archives", lambda *a, **k: reads.append(a) or load_archives(*a, **k))
    from_paths = baselines.evaluate_baselines(*noisy)
    assert len(reads) == 1
    from_loaded = baselines.evaluate_baselines(load_archives(*noisy))
    assert len(reads) == 1
    for name, method in (("triangulation", "triangulation"), ("mean pose", "mean-pose")):
        alone = baselines.evaluate_method(method, *noisy)
        for result in (from_paths[name], from_loaded[name]):
            np.testing.assert_array_equal(result.predictions, alone.predictions)
            assert {k: v for k, v in result.provenance.items() if k != "date"} == \
                {k: v for k, v in alone.provenance.items() if k != "date"}


def test_methods_on_the_command_line_write_the_same_layout(exact, tmp_path):
    out = tmp_path / "triangulation.json"
    completed = subprocess.run([sys.executable, "-m", "iivformer", "evaluate", "--data_3d", exact[0], "--data_2d",
                                exact[1], "--method", "triangulation", "--views", "54138969,60457274",
                                "--protocol", "both", "--json", out], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    written = json.loads(out.read_text())
    assert set(written) == {"p1", "p2", "provenance"} and written["p1"]["mean"] < 0.5
    assert written["provenance"]["method"] == "triangulation" and written["provenance"]["views"] == [0, 3]
    assert written["provenance"]["cameras"] == ["54138969", "60457274"]


@pytest.mark.parametrize("flags, fragment", [
    (["--method", "triangulation", "--views", "0,7"], "'7' is neither a camera index 0..3 nor a camera id"),
    (["--method", "triangulation", "--views", "1,1"], "names a camera twice"),
])
def test_bad_views_are_one_line_errors(exact, flags, fragment):
    completed = subprocess.run([sys.executable, "-m", "iivformer", "evaluate", "--data_3d", exact[0],
                                "--data_2d", exact[1], *flags], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1 and completed.stderr.count("\n") == 1 and fragment in completed.stderr
