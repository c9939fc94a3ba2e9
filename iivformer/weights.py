"""What the weights in a checkpoint must be, checked before anything is built or allocated.

- :func:`check_tensors`: every tensor a CPU tensor whose elements are distinct numbers of its
  storage (a zero or overlapping stride can declare billions of elements over a few bytes).
- :func:`model_config_from`: a stored model config, checked by :class:`ModelConfig` itself (types,
  :data:`iivformer.config.MODEL_LIMITS`, :data:`iivformer.config.MAX_PARAMETERS`).
- :func:`expected_shapes`: the shape of every weight of a config, from a model built on the meta
  device (which allocates nothing).
- :func:`infer_model_config`, :func:`fit_weights`: the config a state dict's shapes declare, and
  whether it is the one expected; every key and shape compared before any copy.
- :func:`check_weights`: floating-point weights without NaN or infinite values.
- :func:`check_normalization`: a stored normalisation of the model's shape, finite, with positive
  standard deviations.

Each failure is one :class:`CheckpointError` line starting with `source` (the file).
"""
import functools
import re
from collections import OrderedDict

import numpy as np
import torch

from iivformer.errors import CheckpointError, IIVFormerError, one_line, short
from iivformer.model import IIVFormer, ModelConfig

_SHAPE_FIELDS = ("num_view", "num_joints", "in_chans", "embed_dim_ratio", "depth", "mlp_ratio", "qkv_bias")


def key_text(key) -> str:
    """A key from a file as shown in a message: control characters escaped, at most 100 characters."""
    text = str(key)
    return text if text.isprintable() and len(text) <= 100 else repr(text[:100])


def _names(keys, limit=6) -> str:
    keys = sorted(key_text(k) for k in keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _layout_problem(tensor: torch.Tensor):
    """Why `tensor` is not a CPU tensor whose elements are distinct numbers of its storage, or None.
    (A zero or overlapping stride declares more elements than the file stores.)"""
    if tensor.layout != torch.strided or tensor.is_quantized:
        return f"has an unsupported layout ({tensor.layout}, {tensor.dtype})"
    if tensor.device.type != "cpu":
        return f"is on the {tensor.device.type} device, not the CPU"
    storage = tensor.untyped_storage().nbytes()
    reach = 0  # the largest offset the dimensions with smaller strides reach
    for stride, size in sorted((s, n) for n, s in zip(tensor.shape, tensor.stride()) if n > 1):
        if stride <= reach:
            return (f"of shape {tuple(tensor.shape)} reuses stored numbers (strides {tensor.stride()} over a "
                    f"storage of {storage:,} bytes)")
        reach += (size - 1) * stride
    if tensor.numel() and (tensor.storage_offset() + reach + 1) * tensor.element_size() > storage:
        return f"of shape {tuple(tensor.shape)} does not fit its storage of {storage:,} bytes"
    return None


_CONTAINERS = (dict, list, tuple, set, frozenset)


def check_tensors(value, source) -> None:
    """Every tensor anywhere in `value` on the CPU, its elements distinct numbers of its storage
    (checked before any value is read)."""
    pending = [("", value)]
    while pending:  # a loop, not recursion: a crafted file can nest lists arbitrarily deep
        where, item = pending.pop()
        if isinstance(item, torch.Tensor):
            problem = _layout_problem(item)
            if problem:
                raise CheckpointError(f"{source}: tensor {where or '(the whole file)'} {problem}")
        elif isinstance(item, _CONTAINERS):
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            pending.extend((_child(where, key, isinstance(item, dict)), value) for key, value in pairs
                           if isinstance(value, (torch.Tensor, *_CONTAINERS)))


def _child(where: str, key, named: bool) -> str:
    if not named:
        return f"{where}[{key}]"
    return f"{where}.{key_text(key)}" if where else key_text(key)


def model_config_from(values, source) -> ModelConfig:
    """The :class:`ModelConfig` a checkpoint stores; its own checks (types, limits, parameter count)
    become one CheckpointError line naming the file."""
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise CheckpointError(f"{source}: the checkpoint's model_config is damaged (found {short(values)})")
    try:
        return ModelConfig.from_dict(values)
    except (IIVFormerError, TypeError, ValueError, OverflowError) as error:
        raise CheckpointError(f"{source}: {one_line(error)[:300]}") from None


def expected_shapes(config: ModelConfig, source="checkpoint") -> "OrderedDict[str, tuple]":
    """{name: shape} of the state dict of ``IIVFormer(config)``, from a model built on the meta
    device (no memory is allocated; a ModelConfig is within its limits by construction). The model
    has no buffers: these are its parameters, in order."""
    return OrderedDict(_meta_shapes(config))


@functools.lru_cache(maxsize=16)
def _meta_shapes(config: ModelConfig) -> tuple:
    """((name, shape), ...) of the parameters of ``IIVFormer(config)`` built on the meta device."""
    with torch.device("meta"):
        model = IIVFormer(config)
    return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())


def infer_model_config(state_dict, source="state dict") -> ModelConfig:
    """The :class:`ModelConfig` whose weights have these shapes (num_heads, which no shape
    shows, is 8 when the width allows it; drop rates keep their defaults). Every key and shape is
    compared with :func:`expected_shapes` before the caller builds anything."""
    def fail(detail):
        raise CheckpointError(f"{source}: is not an IIVFormer state dict ({detail})")

    keys = set(state_dict)
    if "Intra_pos_embed" not in keys or "Inter_pos_embed" not in keys:
        foreign = [k for k in keys if not k.startswith(("Intra_", "Inter_", "weighted_mean", "head", "pos_"))]
        fail(f"unexpected keys: {_names(foreign or keys)}")
    intra, inter = state_dict["Intra_pos_embed"].shape, state_dict["Inter_pos_embed"].shape
    if len(intra) != 3 or len(inter) != 3:
        fail(f"position embeddings of shapes {tuple(intra)} and {tuple(inter)}")
    joints, width, views = intra[1], intra[2], inter[1]
    depth = len({int(m.group(1)) for k in keys if (m := re.match(r"Intra_blocks\.(\d+)\.", k))})
    embedding, fc1 = state_dict.get("Intra_patch_to_embedding.weight"), state_dict.get("Intra_blocks.0.mlp.fc1.weight")
    if embedding is None or fc1 is None or embedding.ndim != 2 or fc1.ndim != 2 or width == 0:
        fail("no patch embedding or no MLP in block 0")
    in_chans, mlp_ratio = embedding.shape[1], fc1.shape[0] / width
    heads = next(h for h in (8, 4, 2, 1) if width % h == 0)
    try:
        config = ModelConfig(num_view=views, num_joints=joints, in_chans=in_chans, embed_dim_ratio=width,
                             depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
                             qkv_bias="Intra_blocks.0.attn.qkv.bias" in keys)
    except IIVFormerError as error:
        raise CheckpointError(f"{source}: the weights' shapes declare an unusable model ({one_line(error)})") from None
    expected = expected_shapes(config, source)
    unexpected, missing = keys - set(expected), set(expected) - keys
    if unexpected or missing:
        fail("; ".join(f"{what} keys: {_names(names)}" for what, names in
                       (("unexpected", unexpected), ("missing", missing)) if names))
    wrong = [k for k in expected if expected[k] != tuple(state_dict[k].shape)]
    if wrong:
        fail(f"unexpected shapes of {_names(wrong)}")
    return config


def fit_weights(state, requested: ModelConfig, label: str, source) -> None:
    """The weights `state` are those of `requested` (every key and shape); else one line naming
    the sizes that differ (`label` says where `requested` comes from, e.g. "requested")."""
    found = infer_model_config(state, source=source)
    differ = [f"{name} {getattr(found, name)} in the file, {getattr(requested, name)} {label}"
              for name in _SHAPE_FIELDS if getattr(found, name) != getattr(requested, name)]
    if differ:
        raise CheckpointError(f"{source}: the weights do not fit the model: {'; '.join(differ)}")


def check_weights(state, source, where: str = "") -> None:
    """Every weight a floating-point tensor without NaN or infinite values (`where` follows its name)."""
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: tensor {key_text(name)}{where} holds {tensor.dtype} values, "
                                  "not floating-point weights")
        bad = tensor.numel() - int(torch.isfinite(tensor).sum())
        if bad:
            raise CheckpointError(f"{source}: tensor {key_text(name)}{where} has {bad:,} non-finite values "
                                  "(NaN or infinite)")


def check_normalization(values, config: ModelConfig, source) -> None:
    """A stored normalisation {"mean", "std"} of shape (num_view, num_joints, in_chans): every mean
    finite and every standard deviation finite and positive (as float32, the type it is used in)."""
    if not isinstance(values, dict) or "mean" not in values or "std" not in values:
        raise CheckpointError(f"{source}: the normalization must be a dict of mean and std, not {short(values)}")
    shape = (config.num_view, config.num_joints, config.in_chans)
    for name in ("mean", "std"):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                array = np.asarray(values[name], dtype=np.float64).astype(np.float32)
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise CheckpointError(f"{source}: the normalization {name} is not an array of numbers") from None
        if array.shape != shape:
            raise CheckpointError(f"{source}: the normalization {name} has shape {array.shape}; the model "
                                  f"needs {shape} (views, joints, coordinates)")
        bad = ~np.isfinite(array) if name == "mean" else ~(np.isfinite(array) & (array > 0))
        if bad.any():
            view, joint, axis = (int(i) for i in np.argwhere(bad)[0])
            kind = "non-finite" if name == "mean" else "not finite and positive"
            raise CheckpointError(f"{source}: the normalization {name} has {int(bad.sum())} values {kind}, the "
                                  f"first at view {view}, joint {joint}, coordinate {axis} "
                                  f"({float(array[view, joint, axis])!r})")
