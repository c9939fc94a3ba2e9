"""3D pose errors on Human3.6M: MPJPE (Protocol 1), P-MPJPE (Protocol 2), N-MPJPE, MPJVE, PCK, AUC.

Every function takes ``predicted`` and ``target`` of the same shape ``(..., J, 3)`` in
millimetres, either both numpy arrays or torch tensors (if one of them is a tensor, the other
is converted to one). Shapes that differ, or that do not end in ``(J, 3)``, raise ``ValueError``.

- numpy inputs are computed in float64; scalar metrics return a Python ``float`` and
  array-valued functions return float64 arrays.
- torch inputs stay on their device and dtype; scalar metrics return a 0-d tensor, so
  ``mpjpe`` is differentiable and can be the training loss.

The formulas follow VideoPose3D ``common/loss.py`` (Pavllo et al., 2019).
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]

DEFAULT_AUC_THRESHOLDS = np.linspace(0.0, 150.0, 31)


def _prepare(predicted, target) -> tuple:
    """Both inputs as float arrays of one kind (torch if either is a tensor), shapes checked."""
    if isinstance(predicted, torch.Tensor) or isinstance(target, torch.Tensor):
        device = predicted.device if isinstance(predicted, torch.Tensor) else target.device
        p = torch.as_tensor(predicted, device=device)
        t = torch.as_tensor(target, device=device)
        dtype = torch.promote_types(p.dtype, t.dtype)
        if not dtype.is_floating_point:
            dtype = torch.get_default_dtype()
        p, t = p.to(dtype), t.to(dtype)
    else:
        p = np.asarray(predicted, dtype=np.float64)
        t = np.asarray(target, dtype=np.float64)
    if tuple(p.shape) != tuple(t.shape):
        raise ValueError(
            f"predicted and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}"
        )
    if p.ndim < 2 or p.shape[-1] != 3 or p.shape[-2] < 1:
        raise ValueError(f"poses must have shape (..., J, 3) with J >= 1, got {tuple(p.shape)}")
    return p, t


def _is_torch(x) -> bool:
    return isinstance(x, torch.Tensor)


def _scalar(x):
    """A Python float for numpy results, the 0-d tensor itself for torch results."""
    return x if _is_torch(x) else float(x)


def _norm(x):
    return torch.linalg.vector_norm(x, dim=-1) if _is_torch(x) else np.linalg.norm(x, axis=-1)


def _safe_divide(numerator, denominator):
    """numerator / denominator, with 0 where the denominator is 0 (degenerate poses)."""
    if _is_torch(denominator):
        return numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
    return numerator / np.maximum(denominator, np.finfo(denominator.dtype).tiny)


def per_joint_errors(predicted: Array, target: Array) -> Array:
    """Euclidean distance of every joint, shape (..., J); no reduction."""
    p, t = _prepare(predicted, target)
    return _norm(p - t)


def mpjpe(predicted: Array, target: Array):
    """Protocol 1: mean Euclidean joint error over all joints and poses (mm)."""
    return _scalar(per_joint_errors(predicted, target).mean())


def procrustes_align(predicted: Array, target: Array) -> Array:
    """Align each pose of ``predicted`` (..., J, 3) to ``target`` by the best similarity transform.

    Scale, rotation and translation minimise the squared joint error per pose (Umeyama), batched
    over all leading dimensions with one SVD call. As in VideoPose3D ``p_mpjpe``, reflections are
    excluded: where det(R) < 0 the last column of V and the last singular value change sign.
    Returns the aligned prediction, shape (..., J, 3). A pose whose joints all coincide gets
    scale 0, i.e. it is mapped onto the centroid of its target.
    """
    p, t = _prepare(predicted, target)
    mu_p, mu_t = p.mean(-2)[..., None, :], t.mean(-2)[..., None, :]
    p0, t0 = p - mu_p, t - mu_t
    if _is_torch(p):
        h = t0.transpose(-1, -2) @ p0  # (..., 3, 3)
        u, s, vt = torch.linalg.svd(h)
        v, ut = vt.transpose(-1, -2), u.transpose(-1, -2)
        sign = torch.sign(torch.linalg.det(v @ ut))
        flip = torch.cat([torch.ones_like(s[..., :2]), sign[..., None]], dim=-1)
        p_sq = (p0 * p0).sum(dim=(-2, -1))
    else:
        h = np.swapaxes(t0, -1, -2) @ p0
        u, s, vt = np.linalg.svd(h)
        v, ut = np.swapaxes(vt, -1, -2), np.swapaxes(u, -1, -2)
        sign = np.sign(np.linalg.det(v @ ut))
        flip = np.concatenate([np.ones_like(s[..., :2]), sign[..., None]], axis=-1)
        p_sq = (p0 * p0).sum(axis=(-2, -1))
    rotation = (v * flip[..., None, :]) @ ut  # right-multiplied: aligned = a * p0 @ R + mu_t
    scale = _safe_divide((s * flip).sum(-1), p_sq)[..., None, None]
    return scale * (p0 @ rotation) + mu_t


def p_mpjpe(predicted: Array, target: Array):
    """Protocol 2: MPJPE after per-pose similarity alignment (``procrustes_align``), in mm.

    For numpy inputs this matches VideoPose3D ``p_mpjpe`` (computed here in float64).
    """
    return mpjpe(procrustes_align(predicted, target), target)


def n_mpjpe(predicted: Array, target: Array):
    """MPJPE after scaling each pose by sum(t.p) / sum(p.p) over its joints (VideoPose3D ``n_mpjpe``)."""
    p, t = _prepare(predicted, target)
    if _is_torch(p):
        scale = _safe_divide((t * p).sum(dim=(-2, -1), keepdim=True), (p * p).sum(dim=(-2, -1), keepdim=True))
    else:
        scale = _safe_divide((t * p).sum(axis=(-2, -1), keepdims=True), (p * p).sum(axis=(-2, -1), keepdims=True))
    return mpjpe(scale * p, t)


def mean_velocity_error(predicted: Array, target: Array, axis: int = 0):
    """MPJVE: mean norm of the difference of the first differences along the frame ``axis`` (mm/frame).

    ``axis`` must be a leading (frame) dimension, not the joint or coordinate axis, with >= 2 frames.
    """
    p, t = _prepare(predicted, target)
    if not -p.ndim <= axis < p.ndim or axis % p.ndim >= p.ndim - 2:
        raise ValueError(f"axis {axis} is not a frame axis of poses with shape {tuple(p.shape)}")
    axis = axis % p.ndim
    if p.shape[axis] < 2:
        raise ValueError(f"velocity needs at least 2 frames along axis {axis}, got shape {tuple(p.shape)}")
    difference = torch.diff(p - t, dim=axis) if _is_torch(p) else np.diff(p - t, axis=axis)
    return _scalar(_norm(difference).mean())


def pck(predicted: Array, target: Array, threshold: float = 150.0):
    """Percentage (0..100) of joints whose error is below ``threshold`` mm (strictly)."""
    errors = per_joint_errors(predicted, target)
    correct = errors < threshold
    return _scalar(100.0 * (correct.to(errors.dtype) if _is_torch(errors) else correct).mean())


def auc(predicted: Array, target: Array, thresholds=None):
    """Area under the PCK curve: mean PCK (0..100) over ``thresholds`` (default 0, 5, ..., 150 mm).

    Uses a sort and a binary search, so memory stays O(number of joint errors).
    """
    errors = per_joint_errors(predicted, target).reshape(-1)
    thresholds = DEFAULT_AUC_THRESHOLDS if thresholds is None else thresholds
    if _is_torch(errors):
        thresholds = torch.as_tensor(thresholds, dtype=errors.dtype, device=errors.device).reshape(-1)
    else:
        thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.shape[0] == 0:
        raise ValueError("auc needs at least one threshold")
    if _is_torch(errors):
        below = torch.searchsorted(torch.sort(errors).values, thresholds, side="left")
        return 100.0 * below.to(errors.dtype).mean() / errors.numel()
    below = np.searchsorted(np.sort(errors), thresholds, side="left")
    return float(100.0 * below.mean() / errors.size)
