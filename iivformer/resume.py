"""The training state a run continues from (``--resume``), checked field by field, and the random-number states.

:func:`check_training_state` refuses, with one :class:`CheckpointError` line naming the field, every
value of a checkpoint's ``last``, ``history``, ``best_epoch`` and ``best_metric`` that training
reads and could not use: a wrong type, a number out of range, a missing entry, a list of the wrong
length, a non-finite metric, an optimiser state that is not Adam's state for the model's parameters,
a random-number state its generator would refuse. :func:`restore_rng_state` checks what it puts back
the same way, so a state that passed cannot make it fail.
"""
import math
import random

import numpy as np
import torch

from iivformer.errors import CheckpointError, short

PYTHON_STATE = (3, 625)  # random.getstate(): (version 3, 624 words + position, gauss)
MT_WORDS = 624  # the Mersenne Twister's words; its position runs 0..624 (Python's and numpy's alike)
MAX_STEP = 2 ** 53  # Adam's step count: a whole number a float holds exactly
CUDA_STATE_BYTES = (8, 16)  # a CUDA generator's state: seed, or seed and offset
MAX_CUDA_DEVICES = 1024
_ADAM_ENTRY = ("step", "exp_avg", "exp_avg_sq")
_ADAM_DEFAULTED = {"amsgrad", "maximize", "foreach", "capturable", "differentiable", "fused", "decoupled_weight_decay"}


class Damaged(Exception):
    """One field of the training state is unusable: ``field`` names it, ``text`` says why."""

    def __init__(self, field: str, text: str):
        super().__init__(f"{field} {text}")
        self.field, self.text = field, text


def is_int(value) -> bool:
    """An int that is not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float that is finite as a float (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def _same(value, expected) -> bool:
    """Equal and of the same type (element by element for tuples), whatever `value` is."""
    if isinstance(expected, tuple):
        return (isinstance(value, tuple) and len(value) == len(expected)
                and all(_same(v, e) for v, e in zip(value, expected)))
    return type(value) is type(expected) and value == expected


def _sequence(value, field: str, length: int) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise Damaged(field, f"must be a list of {length}, not {short(value)}")


def _words(values, field: str, length: int) -> None:
    _sequence(values, field, length)
    if not all(is_int(v) and 0 <= v < 2 ** 32 for v in values):
        raise Damaged(field, f"must hold {length} integers in 0..{2 ** 32 - 1}")


def _check_python_state(state) -> None:
    _sequence(state, "last.rng.python", 3)
    version, words, gauss = state
    if not is_int(version) or version != PYTHON_STATE[0]:
        raise Damaged("last.rng.python[0]", f"(the version) must be {PYTHON_STATE[0]}, not {short(version)}")
    _words(words, "last.rng.python[1]", PYTHON_STATE[1])
    if words[-1] > MT_WORDS:
        raise Damaged("last.rng.python[1]", f"ends with position {words[-1]}, beyond {MT_WORDS}")
    if gauss is not None and not (isinstance(gauss, float) and math.isfinite(gauss)):
        raise Damaged("last.rng.python[2]", f"(gauss) must be None or a finite float, not {short(gauss)}")
    try:
        random.Random().setstate((version, tuple(words), gauss))
    except (ValueError, TypeError, OverflowError) as error:
        raise Damaged("last.rng.python", f"is refused by Python's generator ({error})") from None


def _check_numpy_state(state) -> None:
    _sequence(state, "last.rng.numpy", 5)
    name, words, position, has_gauss, cached = state
    if not isinstance(name, str) or name != "MT19937":
        raise Damaged("last.rng.numpy[0]", f"must be 'MT19937', not {short(name)}")
    _words(words, "last.rng.numpy[1]", MT_WORDS)
    if not is_int(position) or not 0 <= position <= MT_WORDS:
        raise Damaged("last.rng.numpy[2]", f"(the position) must be an integer in 0..{MT_WORDS}, not {short(position)}")
    if not is_int(has_gauss) or has_gauss not in (0, 1):
        raise Damaged("last.rng.numpy[3]", f"(has_gauss) must be 0 or 1, not {short(has_gauss)}")
    if not is_number(cached):
        raise Damaged("last.rng.numpy[4]", f"(the cached gaussian) must be a finite number, not {short(cached)}")
    try:
        np.random.RandomState().set_state((name, np.asarray(words, dtype=np.uint32), position, has_gauss,
                                           float(cached)))
    except (ValueError, TypeError, OverflowError) as error:
        raise Damaged("last.rng.numpy", f"is refused by numpy's generator ({error})") from None


def _byte_tensor(value, field: str, sizes) -> None:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.ndim != 1 \
            or value.numel() not in sizes or value.device.type != "cpu":
        raise Damaged(field, f"must be a uint8 tensor of {' or '.join(map(str, sizes))} bytes, not {short(value)}")


def _check_torch_states(cpu, cuda) -> None:
    _byte_tensor(cpu, "last.rng.torch", (torch.get_rng_state().numel(),))
    try:
        torch.Generator().set_state(cpu.clone())
    except RuntimeError as error:
        raise Damaged("last.rng.torch", f"is refused by torch's generator ({' '.join(str(error).split())})") from None
    if not isinstance(cuda, (list, tuple)) or len(cuda) > MAX_CUDA_DEVICES:
        raise Damaged("last.rng.cuda", f"must be a list of at most {MAX_CUDA_DEVICES} tensors, not {short(cuda)}")
    for index, state in enumerate(cuda):
        _byte_tensor(state, f"last.rng.cuda[{index}]", CUDA_STATE_BYTES)
        offset = int.from_bytes(bytes(state[8:].tolist()), "little", signed=True) if state.numel() == 16 else 0
        if offset < 0 or offset % 4:
            raise Damaged(f"last.rng.cuda[{index}]", f"holds the offset {offset}; a CUDA generator needs a "
                                                     "non-negative multiple of 4")


def check_rng_state(rng) -> None:
    """Raise :class:`Damaged` unless `rng` is a state :func:`restore_rng_state` can put back: each
    part of the right types and ranges, and accepted by a throwaway generator of its kind."""
    if not isinstance(rng, dict):
        raise Damaged("last.rng", f"must be a dict of python, numpy, torch and cuda states, not {short(rng)}")
    missing = [name for name in ("python", "numpy", "torch", "cuda") if name not in rng]
    if missing:
        raise Damaged("last.rng", f"lacks {', '.join(missing)}")
    _check_python_state(rng["python"])
    _check_numpy_state(rng["numpy"])
    _check_torch_states(rng["torch"], rng["cuda"])


def capture_rng_state() -> dict:
    """Every random-number state a training step draws from (Python, numpy, torch, CUDA)."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"python": [version, list(state), gauss],
            "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(), "cuda": list(cuda)}


def restore_rng_state(rng: dict) -> None:
    """Put back the states :func:`capture_rng_state` took. A state that fails
    :func:`check_rng_state` is one :class:`CheckpointError` line naming the field, and nothing is
    changed; a CUDA state a device refuses (not expected after the checks) is one such line too."""
    try:
        check_rng_state(rng)
    except Damaged as damaged:
        raise CheckpointError(f"cannot restore the random-number state: {damaged}") from None
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, float(cached)))
    torch.set_rng_state(rng["torch"].clone())
    if rng["cuda"] and torch.cuda.is_available():
        for index, state in enumerate(rng["cuda"][:torch.cuda.device_count()]):
            try:
                torch.cuda.set_rng_state(state.clone(), index)
            except RuntimeError as error:
                raise CheckpointError(f"cannot restore the random-number state: last.rng.cuda[{index}] is "
                                      f"refused ({' '.join(str(error).split())})") from None


def check_last_epoch(last) -> int:
    """The completed epoch of a checkpoint's ``last`` entry, after checking its fields are there."""
    if not isinstance(last, dict):
        raise Damaged("last", f"must be a dict of epoch, state_dict, optimizer and rng, not {short(last)}")
    missing = [name for name in ("epoch", "state_dict", "optimizer", "rng") if name not in last]
    if missing:
        raise Damaged("last", f"lacks {', '.join(missing)}")
    if not is_int(last["epoch"]) or last["epoch"] < 1:
        raise Damaged("last.epoch", f"must be a positive integer, not {short(last['epoch'])}")
    return last["epoch"]


def _metric(record: dict, name: str, field: str):
    value = record.get(name)
    if not is_number(value) or value < 0:
        raise Damaged(f"{field}.{name}", f"must be a finite non-negative number (mm), not {short(value)}")
    return value


def check_history(history, epochs: int, select_on: str) -> tuple:
    """(best epoch, best metric) of a history of `epochs` records selected on `select_on`, after
    checking every record: epoch numbers 1..n in order, finite metrics, the running best of each."""
    if not isinstance(history, list) or len(history) != epochs:
        raise Damaged("history", f"must be a list of {epochs} per-epoch records (last.epoch), not {short(history)}")
    best = (0, math.inf)
    for index, record in enumerate(history):
        field = f"history[{index}]"
        if not isinstance(record, dict):
            raise Damaged(field, f"must be a dict, not {short(record)}")
        if not is_int(record.get("epoch")) or record["epoch"] != index + 1:
            raise Damaged(f"{field}.epoch", f"must be {index + 1}, not {short(record.get('epoch'))}")
        names = ["train_mpjpe", "test_mpjpe"] + ["val_mpjpe"] * ("val_mpjpe" in record or select_on == "val")
        metrics = {name: _metric(record, name, field) for name in names}
        if metrics[f"{select_on}_mpjpe"] < best[1]:
            best = (index + 1, metrics[f"{select_on}_mpjpe"])
        if not is_int(record.get("best_epoch")) or record["best_epoch"] != best[0]:
            raise Damaged(f"{field}.best_epoch", f"must be {best[0]}, not {short(record.get('best_epoch'))}")
        if not is_number(record.get("best_metric")) or record["best_metric"] != best[1]:
            raise Damaged(f"{field}.best_metric", f"must be {best[1]!r}, not {short(record.get('best_metric'))}")
    return best


def _check_group(groups, count: int, lr: float) -> None:
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
        raise Damaged("last.optimizer.param_groups", f"must be a list of one dict, not {short(groups)}")
    group, field = groups[0], "last.optimizer.param_groups[0]"
    params = group.get("params")
    if not isinstance(params, list) or not all(is_int(p) for p in params) or params != list(range(count)):
        raise Damaged(f"{field}.params", f"must be the {count} parameter numbers 0..{count - 1}, "
                                          f"not {short(group.get('params'))}")
    reference = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr).state_dict()["param_groups"][0]
    for name, expected in reference.items():
        if name == "params" or (name not in group and name in _ADAM_DEFAULTED):
            continue
        value = group.get(name)
        if not _same(value, expected):
            raise Damaged(f"{field}.{name}", f"must be {short(expected)} (Adam as the run made it), not {short(value)}")


def _check_entry(entry, shape: tuple, field: str) -> None:
    if not isinstance(entry, dict) or set(entry) != set(_ADAM_ENTRY):
        raise Damaged(field, f"must be a dict of {', '.join(_ADAM_ENTRY)}, not {short(entry)}")
    step = entry["step"]
    if isinstance(step, torch.Tensor) and step.numel() == 1 and (step.is_floating_point() or step.dtype == torch.int64):
        step = step.item()
    if not is_number(step) or not 1 <= step <= MAX_STEP or step != int(step):
        raise Damaged(f"{field}.step", f"must be a whole number in 1..2**53, not {short(entry['step'])}")
    for name in ("exp_avg", "exp_avg_sq"):
        value = entry[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or tuple(value.shape) != shape:
            raise Damaged(f"{field}.{name}", f"must be a floating-point tensor of shape {shape}, not {short(value)}")
        if not bool(torch.isfinite(value).all()) or (name == "exp_avg_sq" and bool((value < 0).any())):
            raise Damaged(f"{field}.{name}", "holds non-finite values" + " or negative ones" * (name == "exp_avg_sq"))


def check_optimizer(optimizer, shapes: list, lr: float) -> None:
    """Raise :class:`Damaged` unless `optimizer` is the state dict of ``Adam(parameters, lr=lr)`` for
    parameters of these `shapes` (in order): one param group of Adam's settings, each state entry a
    positive step and finite moments of its parameter's shape."""
    if not isinstance(optimizer, dict) or "state" not in optimizer or "param_groups" not in optimizer:
        raise Damaged("last.optimizer", f"must be a dict of state and param_groups, not {short(optimizer)}")
    _check_group(optimizer["param_groups"], len(shapes), lr)
    state = optimizer["state"]
    if not isinstance(state, dict):
        raise Damaged("last.optimizer.state", f"must be a dict, not {short(state)}")
    for key, entry in state.items():
        if not is_int(key) or not 0 <= key < len(shapes):
            raise Damaged("last.optimizer.state", f"has the key {short(key)}, not a parameter number "
                                                  f"0..{len(shapes) - 1}")
        _check_entry(entry, tuple(shapes[key]), f"last.optimizer.state[{key}]")


def check_training_state(saved: dict, select_on: str, lr: float, shapes: list, source) -> None:
    """One :class:`CheckpointError` line naming the first field of the training state in `saved`
    that training could not use: last (epoch, optimizer, rng), history, best_epoch, best_metric.
    `shapes` are the model's parameter shapes in order, `select_on` and `lr` the run's."""
    try:
        epochs = check_last_epoch(saved.get("last"))
        best_epoch, best_metric = check_history(saved.get("history"), epochs, select_on)
        if not is_int(saved.get("best_epoch")) or saved["best_epoch"] != best_epoch:
            raise Damaged("best_epoch", f"must be the history's best epoch {best_epoch}, "
                                        f"not {short(saved.get('best_epoch'))}")
        if not is_number(saved.get("best_metric")) or saved["best_metric"] != best_metric:
            raise Damaged("best_metric", f"must be the history's best {select_on} MPJPE {best_metric!r}, "
                                         f"not {short(saved.get('best_metric'))}")
        check_rng_state(saved["last"]["rng"])
        check_optimizer(saved["last"]["optimizer"], shapes, lr)
    except Damaged as damaged:
        raise CheckpointError(f"cannot resume from {source}: {damaged}") from None
