"""The checkpoint file: one plain dict that ``torch.load(path, weights_only=True)`` reads.

Layout (``version`` 1)::

    {"format": "iivformer-checkpoint", "version": 1, "model_config": dict,
     "best_state_dict": weights, "best_epoch": int, "best_metric": float (mm),
     "selected_on": "test" | "val",
     "last": {"epoch": int, "state_dict": weights, "optimizer": dict,
              "rng": {"python": list, "numpy": list, "torch": tensor, "cuda": [tensors]}},
     "normalization": Normalization.to_dict(), "history": [dict per epoch],
     "train_config": dict, "seed": int, "views": [camera indices the model sees, in order],
     "rig": the rig of the training archives (iivformer.rig format), or None for Human3.6M's cameras,
     "versions": {"iivformer", "torch", "numpy", "python"}}

Only tensors, dicts, lists, tuples, strings, numbers, booleans and None are stored, so loading
never needs to run code from the file. A plain state dict (the published ``cpn.pth``) is accepted
too and returned as ``{"format": "state_dict", "best_state_dict": ..., "model_config": ...}``.

Loading checks, in this order, each failure one :class:`CheckpointError` line naming the file: a
regular file; for a zip archive, the sizes its directory declares (at most ``IIVFORMER_MAX_ARCHIVE_GB``
GiB in all, 4 by default) and then its checksums; every tensor a CPU tensor without repeated
elements; the model config (within :data:`iivformer.config.MODEL_LIMITS`, at most
:data:`iivformer.config.MAX_PARAMETERS` parameters) and every
weight's shape, from a model built on the meta device (which allocates nothing); then the weights'
values (floating point, finite) and the stored normalisation (:mod:`iivformer.weights`).
:func:`load_for_resume` then checks the training state (:mod:`iivformer.resume`).
"""
import pickletools
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from iivformer import runtime
from iivformer.errors import CheckpointError, IIVFormerError, one_line, short
from iivformer.files import atomic_write, open_regular_file
from iivformer.config import TrainConfig
from iivformer.model import IIVFormer, ModelConfig
from iivformer.resume import Damaged, check_last_epoch, check_training_state
from iivformer.npz import LIMIT_VARIABLE, byte_limit
from iivformer.resume import capture_rng_state, restore_rng_state  # noqa: F401 - part of this module's interface
from iivformer.weights import check_normalization, key_text
from iivformer.weights import check_tensors, check_weights, expected_shapes, fit_weights, infer_model_config, \
    model_config_from

TRAIN_DEFAULTS = TrainConfig().to_dict()  # what a checkpoint that lacks a newer field was trained with
FORMAT = "iivformer-checkpoint"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(value, where="checkpoint") -> None:
    """Refuse (TypeError: a bug in the caller) anything a weights-only load could not read back."""
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a string or int")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif type(value) not in _PLAIN and not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint holds only tensors and plain data")


def save_checkpoint(path, checkpoint: dict) -> None:
    """Write `checkpoint` atomically (see :func:`iivformer.files.atomic_write`): a crash at any
    moment leaves either the old or the new file."""
    _check_plain(checkpoint)

    def write(temporary):
        with open(temporary, "wb") as stream:
            torch.save(checkpoint, stream)

    atomic_write(path, write)


# ------------------------------------------------------------------ reading the file
def _check_file(path: Path) -> None:
    """A regular, non-empty file: a folder, a device such as /dev/zero or a FIFO is refused unread."""
    open_regular_file(path, CheckpointError, "a checkpoint file").close()


def _check_archive(path: Path) -> None:
    """The sizes a zip archive's directory declares, within :func:`iivformer.npz.byte_limit`, then its CRCs."""
    limit = byte_limit()
    try:
        with zipfile.ZipFile(path) as archive:
            total = 0
            for info in archive.infolist():
                total += info.file_size
                if total > limit:
                    so_far = f" (with the members before it, {total:,})" if total != info.file_size else ""
                    raise CheckpointError(
                        f"{path}: archive member {key_text(info.filename)} unpacks to {info.file_size:,} bytes"
                        f"{so_far}, "
                        f"more than the limit of {limit / 2 ** 30:g} GiB; set {LIMIT_VARIABLE} to a larger number "
                        "of GiB to read it")
            bad = archive.testzip()  # the CRCs catch damaged bytes torch itself would not notice
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - damaged zip directories fail in many ways
        raise CheckpointError(f"{path}: truncated or damaged ({type(error).__name__} in the zip archive)") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged (checksum error in {key_text(bad)})")


def _torch_load(path: Path, map_location):
    try:
        with open(path, "rb") as stream:
            head = stream.read(4)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from None
    if head == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or damaged (the zip archive is incomplete)")
        _check_archive(path)
    elif not head.startswith(b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    elif path.stat().st_size > byte_limit():
        raise CheckpointError(f"{path}: {path.stat().st_size:,} bytes, more than the limit of "
                              f"{byte_limit() / 2 ** 30:g} GiB; set {LIMIT_VARIABLE} to a larger number of GiB")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        text = str(error)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            callable_name = found.group(1) if found else _first_global(path)
            if callable_name:
                raise CheckpointError(f"{path}: refused: the file contains objects that would run code when loaded "
                                      f"({key_text(callable_name)}); only tensors and plain data are accepted"
                                      ) from None
            operand = re.search(r"Unsupported operand \d+", text)
            text = f"not a readable pickle: {operand.group(0).lower()}" if operand else "not a readable pickle"
            raise CheckpointError(f"{path}: truncated or damaged ({text})") from None
        raise CheckpointError(f"{path}: truncated or damaged ({type(error).__name__}: "
                              f"{one_line(text)[:200]})") from None


def _first_global(path: Path):
    """The first callable a plain pickle file names (read with pickletools, which runs nothing),
    or None. Explains a weights-only refusal that torch reports only as an unsupported opcode."""
    strings = []
    try:
        with open(path, "rb") as stream:
            for opcode, argument, _ in pickletools.genops(stream):
                if opcode.name == "GLOBAL" or opcode.name == "INST":
                    return str(argument).replace(" ", ".")
                if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    return f"{strings[-2]}.{strings[-1]}"
                if isinstance(argument, str):
                    strings.append(argument)
    except Exception:  # noqa: BLE001 - not a pickle past this point
        pass
    return None


def _is_state_dict(value) -> bool:
    return (isinstance(value, dict) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint (weights-only: no code from the file runs) and check it as the module
    docstring says. Every problem is one :class:`CheckpointError` line naming the file."""
    path = Path(path)
    _check_file(path)
    value = _torch_load(path, map_location)
    check_tensors(value, path)
    if _is_state_dict(value):
        state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in value.items())
        config = infer_model_config(state, source=str(path))
        check_weights(state, path)
        return {"format": "state_dict", "best_state_dict": state, "model_config": config.to_dict()}
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        kind = "a dict without tensors" if isinstance(value, dict) else f"a {type(value).__name__}"
        raise CheckpointError(f"{path}: neither an IIVFormer checkpoint nor a state dict (found {kind})")
    if not isinstance(value.get("version"), int) or value["version"] > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {short(value.get('version'))}; this "
                              f"version of iivformer reads version {VERSION}")
    missing = [k for k in ("model_config", "best_state_dict") if k not in value]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {', '.join(missing)}")
    _check_contents(value, path)
    return value


def _check_contents(value: dict, path: Path) -> None:
    """The weights of a project checkpoint fit its model config and are finite; its normalisation is usable."""
    if not _is_state_dict(value["best_state_dict"]) or not isinstance(value["model_config"], dict):
        raise CheckpointError(f"{path}: the checkpoint's best_state_dict or model_config is damaged")
    config = model_config_from(value["model_config"], path)
    fit_weights(value["best_state_dict"], config, "in its model config", path)
    check_weights(value["best_state_dict"], path, " of best_state_dict")
    if "last" in value:
        last = value["last"]
        if not isinstance(last, dict) or not _is_state_dict(last.get("state_dict")):
            raise CheckpointError(f"{path}: the checkpoint's last must be a dict with the weights last.state_dict, "
                                  f"not {short(last)}")
        fit_weights(last["state_dict"], config, "in its model config", path)
        check_weights(last["state_dict"], path, " of last.state_dict")
    if value.get("normalization") is not None:
        check_normalization(value["normalization"], config, path)


def build_model(checkpoint: dict, which="best", config: ModelConfig = None, source="checkpoint") -> IIVFormer:
    """The model of a loaded checkpoint with its `which` ("best" or "last") weights, loaded
    strictly. `config` forces a model config; sizes that differ from the file's weights are a
    :class:`CheckpointError` naming them (`source`, e.g. the file name, starts the message).
    Every shape is checked before the model is built."""
    if which == "best":
        state = checkpoint["best_state_dict"]
    elif which == "last":
        if "last" not in checkpoint:
            raise CheckpointError(f"{source}: holds only one set of weights (no 'last' epoch state)")
        state = checkpoint["last"]["state_dict"]
    else:
        raise CheckpointError(f"which must be 'best' or 'last', not {which!r}")
    requested = model_config_from(checkpoint["model_config"], source) if config is None else config
    fit_weights(state, requested, "requested" if config is not None else "in its model config", source)
    try:
        model = IIVFormer(requested)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(f"{source}: {one_line(error)[:300]}") from None
    return model


def export_state_dict(checkpoint_path, out_path) -> Path:
    """Write the best weights of a checkpoint as a plain state dict (what the published code's
    ``model.load_state_dict(torch.load(path))`` reads), atomically. Returns `out_path`."""
    checkpoint = load_checkpoint(checkpoint_path)
    build_model(checkpoint, source=str(checkpoint_path))  # the weights must fit their config before we hand them on
    save_checkpoint(out_path, plain_state_dict(checkpoint))
    return Path(out_path)


def plain_state_dict(checkpoint: dict) -> OrderedDict:
    """The best weights of a loaded checkpoint as the plain state dict :func:`export_state_dict` writes."""
    return OrderedDict((k, v.detach().cpu().contiguous()) for k, v in checkpoint["best_state_dict"].items())


# ------------------------------------------------------------------ what a training run writes
TIMING_FIELDS = ("seconds", "samples_per_second")  # in the log only: equal runs give equal files


def training_checkpoint(config, normalization, model, optimizer, epoch, best, history, rig=None) -> dict:
    """The checkpoint layout of a training run after `epoch` (see the module docstring); `best` is
    (epoch, metric in mm, CPU state dict) of the best epoch so far; `rig` that of the training data."""
    best_epoch, best_metric, best_state = best
    return {
        "format": FORMAT, "version": VERSION,
        "model_config": config.model.to_dict(),
        "best_state_dict": best_state, "best_epoch": best_epoch, "best_metric": float(best_metric),
        "selected_on": config.select_on,
        "last": {"epoch": epoch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": capture_rng_state()},
        "normalization": normalization.to_dict(),
        "history": [{k: v for k, v in record.items() if k not in TIMING_FIELDS} for record in history],
        "train_config": config.to_dict(), "seed": config.seed,
        "views": list(config.views or range(config.model.num_view)),
        "rig": rig.to_dict() if rig is not None else None,
        "versions": runtime.versions(),
    }


def load_for_resume(path, config, normalization) -> dict:
    """The checkpoint at `path` if a run with `config` on data normalised by `normalization` can
    continue from it; else one IIVFormerError line naming every difference, or the first field of
    the training state that training could not use (:func:`iivformer.resume.check_training_state`)."""
    path = Path(path)
    if not path.exists():
        raise IIVFormerError(f"cannot resume: {path} not found")
    saved = load_checkpoint(path)
    if "last" not in saved or "train_config" not in saved:
        raise IIVFormerError(f"cannot resume: {path} holds weights only, no training state")
    if not isinstance(saved["train_config"], dict) or not isinstance(saved.get("normalization"), dict):
        raise CheckpointError(f"cannot resume from {path}: train_config or normalization is damaged or missing")
    try:
        done = check_last_epoch(saved["last"])
    except Damaged as damaged:
        raise CheckpointError(f"cannot resume from {path}: {damaged}") from None
    before, now = saved["train_config"], config.to_dict()
    # precision and compile are not compared (nor needed: older checkpoints lack them): they change how
    # fast the recipe runs, not what it learns; the log notes a change (iivformer.train)
    differ = [f"{key} {_shown(before.get(key))} in the checkpoint, {now[key]} now"
              for key in ("batch_size", "lr", "seed", "select_on", "views", "view_dropout", "init_from")
              if not _equal(before.get(key, TRAIN_DEFAULTS[key]), now[key])]
    differ += [f"{key} {saved['model_config'].get(key)} in the checkpoint, {value} now"
               for key, value in now["model"].items() if saved["model_config"].get(key) != value]
    if config.epochs < done:
        differ.append(f"epochs {config.epochs} now, but the checkpoint has completed {done}")
    if not _same_normalization(saved["normalization"], normalization):
        differ.append("the training data's normalisation differs (other archives or training subjects)")
    if differ:
        raise IIVFormerError(f"cannot resume from {path}: {'; '.join(differ)}")
    shapes = list(expected_shapes(config.model, path).values())
    check_training_state(saved, config.select_on, config.lr, shapes, path)
    return saved


def load_initial_weights(path, config, normalization) -> dict:
    """The best weights of the checkpoint at `path` (``TrainConfig.init_from``), to start a run with
    `config` on data normalised by `normalization`; else one IIVFormerError line naming every
    difference (model settings, cameras, normalisation). A plain state dict (the published cpn.pth)
    carries no normalisation and is taken as made for these archives, as evaluation takes it."""
    path = Path(path)
    if not path.exists():
        raise IIVFormerError(f"cannot start from {path}: not found")
    saved = load_checkpoint(path)
    differ = [f"{key} {saved['model_config'].get(key)} there, {value} in this run"
              for key, value in config.model.to_dict().items() if saved["model_config"].get(key) != value]
    views = list(config.views or range(config.model.num_view))
    if saved.get("views") is not None and not _equal(saved["views"], views):
        differ.append(f"cameras {_shown(saved['views'])} there, {views} in this run")
    if isinstance(saved.get("normalization"), dict) and not _same_normalization(saved["normalization"], normalization):
        differ.append("its training data's normalisation differs from this run's (other archives or training subjects)")
    if differ:
        raise IIVFormerError(f"cannot start from {path}: {'; '.join(differ)}")
    return saved["best_state_dict"]


def _same_normalization(stored: dict, normalization) -> bool:
    return (np.array_equal(np.asarray(stored["mean"], np.float32), normalization.mean)
            and np.array_equal(np.asarray(stored["std"], np.float32), normalization.std))


def _shown(value) -> str:
    return str(value) if isinstance(value, (str, int, float)) and len(str(value)) <= 240 else short(value)


def _equal(stored, now) -> bool:
    """A stored setting equals the current one: None, a scalar, or a list of scalars (views); a stored
    dict, tensor or other object never does."""
    if stored is None or now is None:
        return stored is now
    if isinstance(stored, (list, tuple)) and isinstance(now, (list, tuple)):
        return len(stored) == len(now) and all(_equal(a, b) for a, b in zip(stored, now))
    return isinstance(stored, (str, int, float)) and type(stored) is not bool and stored == now
