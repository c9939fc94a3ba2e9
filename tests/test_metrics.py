"""Tests of iivformer.metrics against hand-worked values and independent implementations."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from iivformer import metrics


def p2_per_pose(predicted, target):
    """Protocol 2 error of every pose, (...,): the per-joint errors after alignment, mean over joints."""
    return metrics.per_joint_errors(metrics.procrustes_align(predicted, target), target).mean(-1)

# 17-joint Human3.6M tree (VideoPose3D order), used only to make realistic-looking poses.
PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
BONE_MM = (0, 133, 442, 454, 133, 442, 454, 233, 257, 121, 115, 151, 278, 251, 151, 278, 251)


def reference_p_mpjpe(predicted, target):
    """VideoPose3D common/loss.py p_mpjpe, written out independently; float32 (N, J, 3) inputs."""
    assert predicted.shape == target.shape
    mu_x = np.mean(target, axis=1, keepdims=True)
    mu_y = np.mean(predicted, axis=1, keepdims=True)
    x0 = target - mu_x
    y0 = predicted - mu_y
    norm_x = np.sqrt(np.sum(x0**2, axis=(1, 2), keepdims=True))
    norm_y = np.sqrt(np.sum(y0**2, axis=(1, 2), keepdims=True))
    x0 /= norm_x
    y0 /= norm_y
    h = np.matmul(x0.transpose(0, 2, 1), y0)
    u, s, vt = np.linalg.svd(h)
    v = vt.transpose(0, 2, 1)
    r = np.matmul(v, u.transpose(0, 2, 1))
    sign_det_r = np.sign(np.expand_dims(np.linalg.det(r), axis=1))
    v[:, :, -1] *= sign_det_r
    s[:, -1] *= sign_det_r.flatten()
    r = np.matmul(v, u.transpose(0, 2, 1))
    tr = np.expand_dims(np.sum(s, axis=1, keepdims=True), axis=2)
    a = tr * norm_x / norm_y
    t = mu_x - a * np.matmul(mu_y, r)
    aligned = a * np.matmul(predicted, r) + t
    return np.mean(np.linalg.norm(aligned - target, axis=len(target.shape) - 1))


def random_poses(rng, n):
    """(n, 17, 3) root-relative skeletons in mm: human bone lengths, random bone directions."""
    poses = np.zeros((n, 17, 3))
    for joint, parent in enumerate(PARENTS):
        if parent >= 0:
            direction = rng.normal(size=(n, 3))
            direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
            poses[:, joint] = poses[:, parent] + BONE_MM[joint] * direction
    return poses


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    assert np.isclose(np.linalg.det(q), 1.0)
    return q


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- MPJPE and per-joint errors -------------------------------------------------------------


def test_constant_shift_has_mpjpe_five(rng):
    target = random_poses(rng, 4)
    predicted = target + np.array([3.0, 4.0, 0.0])
    value = metrics.mpjpe(predicted, target)
    assert isinstance(value, float)
    assert value == pytest.approx(5.0, abs=1e-12)
    torch_value = metrics.mpjpe(torch.tensor(predicted), torch.tensor(target))
    assert isinstance(torch_value, torch.Tensor) and torch_value.ndim == 0
    assert torch_value.item() == pytest.approx(5.0, abs=1e-12)


def test_per_joint_errors_hand_made():
    target = np.zeros((2, 3, 3))
    predicted = np.array(
        [
            [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 3.0, 6.0]],  # 1, 2, 7
            [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, -5.0, 12.0]],  # 0, sqrt 3, 13
        ]
    )
    expected = np.array([[1.0, 2.0, 7.0], [0.0, np.sqrt(3.0), 13.0]])
    errors = metrics.per_joint_errors(predicted, target)
    assert isinstance(errors, np.ndarray) and errors.shape == (2, 3)
    np.testing.assert_allclose(errors, expected, atol=1e-12)
    torch_errors = metrics.per_joint_errors(torch.tensor(predicted), torch.tensor(target))
    assert isinstance(torch_errors, torch.Tensor)
    np.testing.assert_allclose(torch_errors.numpy(), expected, atol=1e-12)
    assert metrics.mpjpe(predicted, target) == pytest.approx(expected.mean())


def test_leading_batch_dims(rng):
    target = random_poses(rng, 6).reshape(3, 2, 1, 17, 3)
    predicted = target + rng.normal(scale=20.0, size=target.shape)
    assert metrics.per_joint_errors(predicted, target).shape == (3, 2, 1, 17)
    flat_p, flat_t = predicted.reshape(6, 17, 3), target.reshape(6, 17, 3)
    assert metrics.mpjpe(predicted, target) == pytest.approx(metrics.mpjpe(flat_p, flat_t))
    assert metrics.procrustes_align(predicted, target).shape == predicted.shape
    assert metrics.p_mpjpe(predicted, target) == pytest.approx(metrics.p_mpjpe(flat_p, flat_t))
    assert p2_per_pose(predicted, target).shape == (3, 2, 1)
    assert metrics.n_mpjpe(predicted, target) == pytest.approx(metrics.n_mpjpe(flat_p, flat_t))
    torch_value = metrics.p_mpjpe(torch.tensor(predicted[:, :, :1]), torch.tensor(target[:, :, :1]))
    assert torch_value.item() == pytest.approx(metrics.p_mpjpe(flat_p, flat_t))


@pytest.mark.parametrize(
    "function",
    [
        metrics.mpjpe,
        metrics.per_joint_errors,
        metrics.procrustes_align,
        metrics.p_mpjpe,
        p2_per_pose,
        metrics.n_mpjpe,
        metrics.mean_velocity_error,
        metrics.pck,
        metrics.auc,
    ],
)
def test_shape_mismatch_raises(function):
    with pytest.raises(ValueError, match="same shape"):
        function(np.zeros((4, 17, 3)), np.zeros((4, 16, 3)))
    with pytest.raises(ValueError, match="same shape"):
        function(torch.zeros(4, 17, 3), torch.zeros(5, 17, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., J, 3\)"):
        function(np.zeros((4, 17, 2)), np.zeros((4, 17, 2)))


def test_torch_mpjpe_is_differentiable(rng):
    target = torch.tensor(random_poses(rng, 3), dtype=torch.float32)
    predicted = (target + 10.0 * torch.randn_like(target)).requires_grad_(True)
    loss = metrics.mpjpe(predicted, target)
    loss.backward()
    assert predicted.grad is not None and torch.isfinite(predicted.grad).all()
    # d/dp of mean ||p - t|| is (p - t) / (||p - t|| * number of joint errors)
    diff = (predicted - target).detach()
    expected = diff / diff.norm(dim=-1, keepdim=True) / (3 * 17)
    torch.testing.assert_close(predicted.grad, expected)


# --- Procrustes (Protocol 2) ----------------------------------------------------------------


def test_similarity_transform_has_zero_p_mpjpe(rng):
    target = random_poses(rng, 8)
    rotation = random_rotation(rng)
    predicted = 0.7 * target @ rotation.T + np.array([100.0, -250.0, 4000.0])
    assert metrics.mpjpe(predicted, target) > 100.0
    assert metrics.p_mpjpe(predicted, target) < 1e-6
    np.testing.assert_allclose(metrics.procrustes_align(predicted, target), target, atol=1e-6)
    np.testing.assert_allclose(p2_per_pose(predicted, target), 0.0, atol=1e-6)
    torch_value = metrics.p_mpjpe(torch.tensor(predicted, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    assert torch_value.dtype == torch.float32
    assert torch_value.item() < 0.05


def test_reflected_copy_is_not_aligned(rng):
    target = random_poses(rng, 8)
    mirror = np.diag([-1.0, 1.0, 1.0])
    predicted = target @ mirror
    # An alignment that allowed reflections would make this 0; the proper rotation cannot.
    assert np.min(p2_per_pose(predicted, target)) > 1.0
    assert metrics.p_mpjpe(predicted, target) > 1.0
    assert metrics.p_mpjpe(predicted, target) == pytest.approx(
        reference_p_mpjpe(predicted.astype(np.float32), target.astype(np.float32)), abs=1e-3
    )


def test_p_mpjpe_matches_reference_on_noisy_poses(rng):
    target = random_poses(rng, 200)
    predicted = target + rng.normal(scale=40.0, size=target.shape)
    predicted = predicted @ random_rotation(rng).T * 1.1 + np.array([20.0, 30.0, -10.0])
    expected = reference_p_mpjpe(predicted.astype(np.float32), target.astype(np.float32))
    value = metrics.p_mpjpe(predicted, target)
    assert value == pytest.approx(expected, abs=1e-3)
    assert 20.0 < value < metrics.mpjpe(predicted, target)
    torch_value = metrics.p_mpjpe(torch.tensor(predicted, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    assert torch_value.item() == pytest.approx(value, abs=1e-2)
    torch64 = metrics.p_mpjpe(torch.tensor(predicted), torch.tensor(target))
    assert torch64.item() == pytest.approx(value, abs=1e-9)
    per_sample = p2_per_pose(predicted, target)
    assert per_sample.shape == (200,)
    assert per_sample.mean() == pytest.approx(value)
    assert per_sample[7] == pytest.approx(reference_p_mpjpe(predicted[7:8].astype(np.float32), target[7:8].astype(np.float32)), abs=1e-3)


def test_p_mpjpe_can_exceed_mpjpe():
    """P2 minimises the squared error, not the mean distance: one far-off joint shows it."""
    target = random_poses(np.random.default_rng(0), 1)
    predicted = target.copy()
    predicted[0, 5] += [2000.0, 0.0, 0.0]
    assert metrics.p_mpjpe(predicted, target) > metrics.mpjpe(predicted, target)


def test_degenerate_prediction_maps_to_target_centroid(rng):
    target = random_poses(rng, 2)
    predicted = np.zeros_like(target)
    aligned = metrics.procrustes_align(predicted, target)
    assert np.isfinite(aligned).all()
    np.testing.assert_allclose(aligned, np.broadcast_to(target.mean(-2, keepdims=True), target.shape), atol=1e-9)


pose_arrays = st.integers(1, 3).flatmap(
    lambda n: st.integers(3, 8).flatmap(
        lambda j: st.tuples(
            hnp.arrays(np.float64, (n, j, 3), elements=st.floats(-1000, 1000, width=32)),
            hnp.arrays(np.float64, (n, j, 3), elements=st.floats(-1000, 1000, width=32)),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(pose_arrays)
def test_procrustes_never_increases_squared_error(poses):
    # The brief's "p_mpjpe <= mpjpe" is not a theorem (see test_p_mpjpe_can_exceed_mpjpe).
    # What holds: the alignment is least squares, so the squared error cannot grow, and by
    # Cauchy-Schwarz P-MPJPE is bounded by the RMS joint error of the unaligned prediction.
    predicted, target = poses
    aligned = metrics.procrustes_align(predicted, target)
    before = np.sum((predicted - target) ** 2, axis=(-2, -1))
    after = np.sum((aligned - target) ** 2, axis=(-2, -1))
    assert np.all(after <= before * (1 + 1e-9) + 1e-6)
    rms = np.sqrt(np.mean(np.sum((predicted - target) ** 2, axis=-1)))
    assert metrics.p_mpjpe(predicted, target) <= rms + 1e-6


# --- N-MPJPE, velocity ----------------------------------------------------------------------


def test_n_mpjpe_of_scaled_copy_is_zero(rng):
    target = random_poses(rng, 5)
    scales = np.array([0.5, 0.7, 1.0, 1.3, 2.0])[:, None, None]
    predicted = target * scales
    assert metrics.mpjpe(predicted, target) > 50.0
    assert metrics.n_mpjpe(predicted, target) < 1e-9
    assert metrics.n_mpjpe(torch.tensor(predicted, dtype=torch.float32), torch.tensor(target, dtype=torch.float32)).item() < 1e-3
    # not zero when the prediction is also shifted (no translation in N-MPJPE)
    assert metrics.n_mpjpe(predicted + 100.0, target) > 1.0


def test_velocity_error_of_constant_offset_is_zero(rng):
    target = random_poses(rng, 10)
    predicted = target + np.array([30.0, -20.0, 5.0])
    assert metrics.mean_velocity_error(predicted, target) == pytest.approx(0.0, abs=1e-9)
    assert metrics.mean_velocity_error(torch.tensor(predicted), torch.tensor(target)).item() == pytest.approx(0.0, abs=1e-9)


def test_velocity_error_of_linear_drift(rng):
    target = random_poses(rng, 10)
    frames = np.arange(10)[:, None, None]
    predicted = target + frames * np.array([3.0, 0.0, 4.0])  # 5 mm per frame
    assert metrics.mean_velocity_error(predicted, target) == pytest.approx(5.0)
    # drift along the second axis of a (2, 5, J, 3) layout is seen with axis=1 only
    shaped_p, shaped_t = predicted.reshape(2, 5, 17, 3), target.reshape(2, 5, 17, 3)
    assert metrics.mean_velocity_error(shaped_p, shaped_t, axis=1) == pytest.approx(5.0)
    assert metrics.mean_velocity_error(shaped_p, shaped_t, axis=0) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="frame axis"):
        metrics.mean_velocity_error(shaped_p, shaped_t, axis=2)
    with pytest.raises(ValueError, match="frame axis"):
        metrics.mean_velocity_error(shaped_p, shaped_t, axis=-1)
    with pytest.raises(ValueError, match="2 frames"):
        metrics.mean_velocity_error(predicted[:1], target[:1])


# --- PCK and AUC ----------------------------------------------------------------------------


def poses_with_errors(errors):
    """Target zero, prediction placed so that joint i has error exactly errors[i] (axis directions)."""
    errors = np.asarray(errors, dtype=np.float64)
    directions = np.eye(3)[np.arange(errors.size) % 3] * np.where(np.arange(errors.size) % 2, -1.0, 1.0)[:, None]
    predicted = (directions * errors[:, None])[None]
    return predicted, np.zeros_like(predicted)


def test_pck_on_constructed_errors():
    predicted, target = poses_with_errors([0.0, 100.0, 200.0])
    assert metrics.pck(predicted, target) == pytest.approx(200.0 / 3.0)
    assert metrics.pck(predicted, target, threshold=100.0) == pytest.approx(100.0 / 3.0)  # strict <
    assert metrics.pck(predicted, target, threshold=250.0) == pytest.approx(100.0)
    torch_value = metrics.pck(torch.tensor(predicted), torch.tensor(target))
    assert torch_value.item() == pytest.approx(200.0 / 3.0)


def test_auc_on_constructed_errors():
    errors = np.array([0.0, 12.0, 37.5, 100.0, 149.0, 200.0])
    predicted, target = poses_with_errors(errors)
    thresholds = np.linspace(0, 150, 31)
    expected = np.mean([100.0 * np.mean(errors < th) for th in thresholds])
    assert metrics.auc(predicted, target) == pytest.approx(expected)
    assert metrics.auc(torch.tensor(predicted), torch.tensor(target)).item() == pytest.approx(expected)
    assert metrics.auc(predicted, target, thresholds=[150.0]) == pytest.approx(metrics.pck(predicted, target))
    with pytest.raises(ValueError, match="threshold"):
        metrics.auc(predicted, target, thresholds=[])


def test_numpy_and_torch_agree(rng):
    target = random_poses(rng, 12)
    predicted = target + rng.normal(scale=60.0, size=target.shape)
    tp, tt = torch.tensor(predicted), torch.tensor(target)
    for function in (metrics.mpjpe, metrics.p_mpjpe, metrics.n_mpjpe, metrics.mean_velocity_error, metrics.pck, metrics.auc):
        assert function(tp, tt).item() == pytest.approx(function(predicted, target), rel=1e-9), function.__name__
