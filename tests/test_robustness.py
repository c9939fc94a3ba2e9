"""Detector-noise sweep and per-camera forensics against independent computations."""
import numpy as np
import pytest

from iivformer import config, evaluate, prepare, robustness, synthetic, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    """A ci-profile model (2 epochs) and the tiny set made with 6 px detector noise, test split kept
    with its archives."""
    folder = tmp_path_factory.mktemp("robustness")
    paths = synthetic.write_dataset(folder, preset="tiny", seed=5, detector_noise=6.0, progress=False)
    train.train(config.training_config("ci", device="cpu"), prepare.prepare(*paths), folder / "m.pth",
                folder / "m.log", progress=False)
    _, model, prepared = evaluate.load_for_evaluation(folder / "m.pth", *paths, keep_archives=True)
    return model, prepared


def test_exact_projections_are_the_noise_free_archives_2d(tmp_path):
    paths = synthetic.write_dataset(tmp_path, preset="tiny", seed=5, detector_noise=0, progress=False)
    pixels_only = prepare.Normalization(np.zeros((1, 1, 2), np.float32), np.ones((1, 1, 2), np.float32))
    prepared = prepare.prepare(*paths, train_subjects=(), normalization=pixels_only, keep_archives=True)
    exact = robustness.exact_projections(prepared.archives, prepared.test, prepared.views)
    np.testing.assert_allclose(exact, prepared.test.inputs, atol=1e-3)


def test_the_sweep_starts_at_exact_inputs_and_noise_hurts_triangulation(model_and_data):
    model, prepared = model_and_data
    sweep = robustness.noise_sweep(model, prepared, levels=(0.0, 5.0, 20.0))
    assert list(sweep) == [0.0, 5.0, 20.0]
    assert sweep[0.0]["triangulation"]["p1"] < 0.5  # exact projections triangulate exactly
    assert sweep[0.0]["triangulation"]["p1"] < sweep[5.0]["triangulation"]["p1"] < sweep[20.0]["triangulation"]["p1"]
    exact = robustness.exact_projections(prepared.archives, prepared.test, prepared.views)
    direct = robustness.evaluate_pixels(model, prepared, exact)
    assert sweep[0.0] == direct


def test_noise_is_reproducible_and_of_the_asked_size(model_and_data):
    _, prepared = model_and_data
    exact = robustness.exact_projections(prepared.archives, prepared.test, prepared.views)
    first = robustness.with_detector_noise(exact, prepared.test, prepared.views, 5.0)
    again = robustness.with_detector_noise(exact, prepared.test, prepared.views, 5.0)
    assert np.array_equal(first, again)
    median = np.median(np.abs(first - exact))
    assert 2.0 < median < 10.0  # px: most joints move by about the noise size


def test_forensics_name_what_each_camera_costs(model_and_data):
    model, prepared = model_and_data
    result = robustness.camera_forensics(model, prepared)
    detected = prepared.normalization.invert(prepared.test.inputs)
    exact = robustness.exact_projections(prepared.archives, prepared.test, prepared.views)
    per_joint = np.linalg.norm(detected - exact, axis=-1).mean(axis=0)
    np.testing.assert_allclose(result["pixel_error_per_joint"], per_joint, rtol=1e-5)
    assert list(result["cameras"]) == ["54138969", "55011271", "58860488", "60457274"]
    for axis, entry in enumerate(result["cameras"].values()):
        assert entry["pixel_error"] == pytest.approx(per_joint[axis].mean(), rel=1e-5)
        assert entry["triangulation"]["p1"] < result["inputs"]["triangulation"]["p1"]  # one camera made exact
