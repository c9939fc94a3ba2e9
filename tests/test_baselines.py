"""Baselines: triangulation recovers exact projections; the mean pose is what ignoring input gives."""
import numpy as np
import pytest

from iivformer import baselines, cameras, metrics, prepare, synthetic


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exact")
    return prepare.prepare(*synthetic.write_dataset(folder, preset="tiny", seed=3, detector_noise=0, progress=False))


def test_triangulation_recovers_noise_free_poses(exact):
    predictions = baselines.triangulation(exact.test, exact.normalization)
    assert predictions.shape == exact.test.targets[:, 0].shape
    assert metrics.mpjpe(predictions, exact.test.targets[:, 0]) < 0.1  # mm


def test_rays_meet_at_a_known_point():
    point = np.array([120.0, -340.0, 910.0])
    cams = cameras.cameras_for("S9")
    directions = np.stack([cameras.pixels_to_rays(cameras.project(point, cam), cam) for cam in cams])
    origins = np.stack([cam.translation for cam in cams])
    np.testing.assert_allclose(baselines.triangulate_rays(origins, directions), point, atol=1e-6)


def test_mean_pose_repeats_the_training_mean(exact):
    predictions = baselines.mean_pose(exact.train, exact.test)
    np.testing.assert_allclose(predictions[0], exact.train.targets[:, 0].mean(axis=0, dtype=np.float64), atol=1e-3)
    assert np.all(predictions == predictions[:1])
