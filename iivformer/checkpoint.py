"""The checkpoint file: one plain dict that ``torch.load(path, weights_only=True)`` reads.

Layout (``version`` 1)::

    {"format": "iivformer-checkpoint", "version": 1, "model_config": dict,
     "best_state_dict": weights, "best_epoch": int, "best_metric": float (mm),
     "selected_on": "test" | "val",
     "last": {"epoch": int, "state_dict": weights, "optimizer": dict,
              "rng": {"python": list, "numpy": list, "torch": tensor, "cuda": [tensors]}},
     "normalization": Normalization.to_dict(), "history": [dict per epoch],
     "train_config": dict, "seed": int, "versions": {"torch", "numpy", "python"}}

Only tensors, dicts, lists, tuples, strings, numbers, booleans and None are stored, so loading
never needs to run code from the file. A plain state dict (the published ``cpn.pth``) is accepted
too and returned as ``{"format": "state_dict", "best_state_dict": ..., "model_config": ...}``.
"""
import pickletools
import random
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from iivformer import runtime
from iivformer.errors import CheckpointError, IIVFormerError, one_line
from iivformer.files import atomic_write
from iivformer.model import IIVFormer, ModelConfig

FORMAT = "iivformer-checkpoint"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)
_SHAPE_FIELDS = ("num_view", "num_joints", "in_chans", "embed_dim_ratio", "depth", "mlp_ratio", "qkv_bias")


def _names(keys, limit=6) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


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


def _torch_load(path: Path, map_location):
    with open(path, "rb") as stream:
        head = stream.read(4)
    if head == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: truncated or damaged (the zip archive is incomplete)")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()  # the CRCs catch damaged bytes torch itself would not notice
        except Exception as error:  # noqa: BLE001 - damaged zip directories fail in many ways
            raise CheckpointError(f"{path}: truncated or damaged ({type(error).__name__} in the zip archive)") from None
        if bad is not None:
            raise CheckpointError(f"{path}: damaged (checksum error in {bad})")
    elif not head.startswith(b"\x80"):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
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
                raise CheckpointError(f"{path}: refused: the file contains objects that would run code when "
                                      f"loaded ({callable_name}); only tensors and plain data are accepted") from None
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
    """Read a checkpoint (weights-only: no code from the file runs). Every problem is one
    :class:`CheckpointError` line naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    value = _torch_load(path, map_location)
    if _is_state_dict(value):
        state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in value.items())
        config = infer_model_config(state, source=str(path))
        return {"format": "state_dict", "best_state_dict": state, "model_config": config.to_dict()}
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        kind = "a dict without tensors" if isinstance(value, dict) else f"a {type(value).__name__}"
        raise CheckpointError(f"{path}: neither an IIVFormer checkpoint nor a state dict (found {kind})")
    if not isinstance(value.get("version"), int) or value["version"] > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {value.get('version')!r}; this "
                              f"version of iivformer reads version {VERSION}")
    missing = [k for k in ("model_config", "best_state_dict") if k not in value]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {', '.join(missing)}")
    if not _is_state_dict(value["best_state_dict"]) or not isinstance(value["model_config"], dict):
        raise CheckpointError(f"{path}: the checkpoint's best_state_dict or model_config is damaged")
    try:
        ModelConfig.from_dict(value["model_config"])
    except (IIVFormerError, TypeError) as error:
        raise CheckpointError(f"{path}: {one_line(error)}") from None
    return value


def infer_model_config(state_dict, source="state dict") -> ModelConfig:
    """The :class:`ModelConfig` whose weights have these shapes (num_heads, which no shape
    shows, is 8 when the width allows it; drop rates keep their defaults)."""
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
    if embedding is None or fc1 is None or embedding.ndim != 2 or fc1.ndim != 2:
        fail("no patch embedding or no MLP in block 0")
    in_chans, mlp_ratio = embedding.shape[1], fc1.shape[0] / width
    heads = next(h for h in (8, 4, 2, 1) if width % h == 0)
    try:
        config = ModelConfig(num_view=views, num_joints=joints, in_chans=in_chans, embed_dim_ratio=width,
                             depth=depth, num_heads=heads, mlp_ratio=mlp_ratio,
                             qkv_bias="Intra_blocks.0.attn.qkv.bias" in keys)
    except IIVFormerError as error:
        fail(one_line(error))
    expected = IIVFormer(config).state_dict()  # ~50 ms even at the published size
    unexpected, missing = keys - set(expected), set(expected) - keys
    if unexpected or missing:
        fail("; ".join(f"{what} keys: {_names(names)}" for what, names in
                       (("unexpected", unexpected), ("missing", missing)) if names))
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state_dict[k].shape)]
    if wrong:
        fail(f"unexpected shapes of {_names(wrong)}")
    return config


def build_model(checkpoint: dict, which="best", config: ModelConfig = None, source="checkpoint") -> IIVFormer:
    """The model of a loaded checkpoint with its `which` ("best" or "last") weights, loaded
    strictly. `config` forces a model config; sizes that differ from the file's weights are a
    :class:`CheckpointError` naming them (`source`, e.g. the file name, starts the message)."""
    if which == "best":
        state = checkpoint["best_state_dict"]
    elif which == "last":
        if "last" not in checkpoint:
            raise CheckpointError(f"{source}: holds only one set of weights (no 'last' epoch state)")
        state = checkpoint["last"]["state_dict"]
    else:
        raise CheckpointError(f"which must be 'best' or 'last', not {which!r}")
    try:
        requested = config if config is not None else ModelConfig.from_dict(checkpoint["model_config"])
    except (IIVFormerError, TypeError) as error:
        raise CheckpointError(f"{source}: {one_line(error)}") from None
    label = "requested" if config is not None else "in its model config"
    found = infer_model_config(state, source=source)
    differ = [f"{name} {getattr(found, name)} in the file, {getattr(requested, name)} {label}"
              for name in _SHAPE_FIELDS if getattr(found, name) != getattr(requested, name)]
    if differ:
        raise CheckpointError(f"{source}: the weights do not fit the model: {'; '.join(differ)}")
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
    state = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in checkpoint["best_state_dict"].items())
    save_checkpoint(out_path, state)
    return Path(out_path)


# ------------------------------------------------------------------ what a training run writes
TIMING_FIELDS = ("seconds", "samples_per_second")  # in the log only: equal runs give equal files


def training_checkpoint(config, normalization, model, optimizer, epoch, best, history) -> dict:
    """The checkpoint layout of a training run after `epoch` (see the module docstring); `best` is
    (epoch, metric in mm, CPU state dict) of the best epoch so far."""
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
        "versions": runtime.versions(),
    }


def capture_rng_state() -> dict:
    """Every random-number state a training step draws from (Python, numpy, torch, CUDA)."""
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"python": [version, list(state), gauss],
            "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(), "cuda": list(cuda)}


def restore_rng_state(rng: dict) -> None:
    """Put back the states :func:`capture_rng_state` took."""
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        for index, state in enumerate(rng["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), index)


def load_for_resume(path, config, normalization) -> dict:
    """The checkpoint at `path` if a run with `config` on data normalised by `normalization` can
    continue from it; else one IIVFormerError line naming every difference."""
    path = Path(path)
    if not path.exists():
        raise IIVFormerError(f"cannot resume: {path} not found")
    saved = load_checkpoint(path)
    if "last" not in saved or "train_config" not in saved:
        raise IIVFormerError(f"cannot resume: {path} holds weights only, no training state")
    before, now = saved["train_config"], config.to_dict()
    differ = [f"{key} {before.get(key)} in the checkpoint, {now[key]} now"
              for key in ("batch_size", "lr", "seed", "select_on") if before.get(key) != now[key]]
    differ += [f"{key} {saved['model_config'].get(key)} in the checkpoint, {value} now"
               for key, value in now["model"].items() if saved["model_config"].get(key) != value]
    done = saved["last"]["epoch"]
    if config.epochs < done:
        differ.append(f"epochs {config.epochs} now, but the checkpoint has completed {done}")
    stored = saved["normalization"]
    if not (np.array_equal(np.asarray(stored["mean"], np.float32), normalization.mean)
            and np.array_equal(np.asarray(stored["std"], np.float32), normalization.std)):
        differ.append("the training data's normalisation differs (other archives or training subjects)")
    if differ:
        raise IIVFormerError(f"cannot resume from {path}: {'; '.join(differ)}")
    return saved
