"""Training as published: Adam, MPJPE loss, the best epoch kept, a checkpoint after every epoch.

The recipe: Adam(lr 0.0004), batch 1024, 100 epochs, drop path in training; after every epoch
the test MPJPE is measured and the best epoch's weights are kept (the published code selects on
the test subjects; ``select_on="val"`` selects on held-out training subjects instead).

Mechanics: the prepared arrays go to the device once; every epoch draws batches by index from a
permutation seeded with (seed, epoch); losses stay on the device and are read every
``CHECK_EVERY`` batches (progress bar, divergence check). After every epoch the whole state is
written atomically to one checkpoint (see :mod:`iivformer.checkpoint`), so an interrupted run
resumes exactly where it stopped: on CPU, bit-identical to an uninterrupted run.
"""
import logging
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from iivformer import checkpoint as checkpoints
from iivformer.errors import IIVFormerError
from iivformer.metrics import mpjpe  # the training loss (MPJPE, mm)
from iivformer.model import IIVFormer, ModelConfig

SELECT_ON = ("test", "val")
CHECK_EVERY = 20  # batches between host reads of the running loss


class TrainingInterrupted(IIVFormerError):
    """Ctrl-C during training; the message says which epoch is saved and how to continue."""


@dataclass
class TrainConfig:
    batch_size: int = 1024
    epochs: int = 100
    lr: float = 0.0004
    seed: int = 42
    device: str = "auto"  # "auto": CUDA when present, else CPU
    model: ModelConfig = field(default_factory=ModelConfig)
    select_on: str = "test"  # which split picks the best epoch: "test" (published) or "val"
    eval_batch_size: int = 4096

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        self.validate()

    def validate(self) -> None:
        """Raise IIVFormerError (one line) for a value that cannot train."""
        for name in ("batch_size", "epochs", "eval_batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise IIVFormerError(f"{name} must be an integer, not {value!r}")
            if value < 0 or (value == 0 and name != "seed"):
                raise IIVFormerError(f"{name} must be {'non-negative' if name == 'seed' else 'positive'}, not {value}")
            setattr(self, name, int(value))
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float, np.floating)) \
                or not math.isfinite(self.lr) or self.lr <= 0:
            raise IIVFormerError(f"lr must be a positive number, not {self.lr!r}")
        self.lr = float(self.lr)
        if self.select_on not in SELECT_ON:
            raise IIVFormerError(f"select_on must be 'test' or 'val', not {self.select_on!r}")
        if not isinstance(self.model, ModelConfig):
            raise IIVFormerError(f"model must be a ModelConfig, not {type(self.model).__name__}")
        if not isinstance(self.device, str):
            raise IIVFormerError(f"device must be a string such as 'auto', 'cpu' or 'cuda', not {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)  # the model config becomes a dict too

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise IIVFormerError(f"training config has unknown keys: {', '.join(unknown)}")
        return cls(**values)


def resolve_device(name="auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; a requested device that is missing is an error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise IIVFormerError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no CUDA device visible"
            raise IIVFormerError(f"device {name!r} requested but CUDA is not available (torch {torch.__version__}, {build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise IIVFormerError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA devices exist")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise IIVFormerError(f"device {name!r} requested but MPS is not available")
    elif device.type != "cpu":
        raise IIVFormerError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@torch.no_grad()
def evaluate(model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> float:
    """MPJPE (mm) of the model in eval mode over a split already on the device."""
    model.eval()
    dtype = torch.float32 if inputs.device.type == "mps" else torch.float64
    total = torch.zeros((), dtype=dtype, device=inputs.device)
    for start in range(0, len(inputs), batch_size):
        error = torch.linalg.vector_norm(model(inputs[start:start + batch_size]) - targets[start:start + batch_size], dim=-1)
        total += error.sum(dtype=dtype)
    return float(total) / (targets.shape[0] * targets.shape[2])


def train(config: TrainConfig, prepared, checkpoint_path="cpn.pth", log_path="cpn.log", resume=False,
          callbacks=(), progress=True) -> list:
    """Train (or with `resume`, continue) and return the history: one record per epoch,
    {"epoch", "train_mpjpe", "test_mpjpe", ["val_mpjpe"], "seconds", "samples_per_second",
    "best_epoch", "best_metric"}; each callback gets every record as it is made."""
    config.validate()
    device = resolve_device(config.device)
    splits = _check_data(config, prepared)
    checkpoint_path, log_path = Path(checkpoint_path), Path(log_path)
    check_output_paths(checkpoint_path, log_path)
    saved = _load_for_resume(checkpoint_path, config, prepared) if resume else None

    data = {name: (_to_device(split.inputs, device), _to_device(split.targets, device)) for name, split in splits.items()}
    seed_everything(config.seed)
    model = IIVFormer.from_config(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history, best_epoch, best_metric, best_state, start = [], 0, math.inf, None, 0
    if saved is not None:
        model.load_state_dict(saved["last"]["state_dict"])
        optimizer.load_state_dict(saved["last"]["optimizer"])
        history, start = list(saved["history"]), saved["last"]["epoch"]
        best_epoch, best_metric, best_state = saved["best_epoch"], saved["best_metric"], saved["best_state_dict"]
        _set_rng_state(saved["last"]["rng"])  # last: model building above consumed random numbers

    log = _open_log(log_path)
    saved_epoch, epoch = start, start + 1
    try:
        _log_header(log, config, device, prepared, checkpoint_path, saved)
        for epoch in range(start + 1, config.epochs + 1):
            began = time.perf_counter()
            train_mpjpe, bad_batch = _train_epoch(model, optimizer, *data["train"], config, epoch, progress)
            train_seconds = time.perf_counter() - began
            if bad_batch is not None:
                raise IIVFormerError(_diverged(f"non-finite loss at epoch {epoch}, batch {bad_batch}",
                                               config, saved_epoch, checkpoint_path))
            record = {"epoch": epoch, "train_mpjpe": train_mpjpe}
            for name in [name for name in splits if name != "train"]:
                record[f"{name}_mpjpe"] = evaluate(model, *data[name], config.eval_batch_size)
            metric = record[f"{config.select_on}_mpjpe"]
            if not math.isfinite(metric):
                raise IIVFormerError(_diverged(f"non-finite {config.select_on} MPJPE after epoch {epoch}",
                                               config, saved_epoch, checkpoint_path))
            improved = metric < best_metric
            if improved:
                best_epoch, best_metric = epoch, metric
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            record.update(seconds=time.perf_counter() - began,
                          samples_per_second=len(data["train"][0]) / train_seconds,
                          best_epoch=best_epoch, best_metric=best_metric)
            history.append(record)
            try:
                checkpoints.save_checkpoint(checkpoint_path, _checkpoint(
                    config, prepared, model, optimizer, epoch, best_state, best_epoch, best_metric, history))
            except OSError as error:
                raise IIVFormerError(f"cannot write the checkpoint {checkpoint_path} after epoch {epoch}: "
                                     f"{error.strerror or error}; the previous one is unchanged") from None
            saved_epoch = epoch
            _log_epoch(log, record, config, checkpoint_path, improved, progress)
            for callback in callbacks:
                callback(dict(record))
        log.info(f"finished: best epoch {best_epoch}, {config.select_on} MPJPE {best_metric:.2f} mm, "
                 f"in {checkpoint_path}")
        return history
    except KeyboardInterrupt:
        if saved_epoch == epoch:
            message = f"interrupted after epoch {epoch}, which is saved in {checkpoint_path}; continue with --resume"
        elif saved_epoch > 0:
            message = (f"interrupted during epoch {epoch}; the last completed epoch ({saved_epoch}) is saved in "
                       f"{checkpoint_path}; continue with --resume")
        else:
            message = f"interrupted during epoch {epoch}; no epoch was completed, so nothing is saved"
        log.info(message)
        raise TrainingInterrupted(message) from None
    except IIVFormerError as error:
        log.info(f"error: {error}")
        raise
    finally:
        for handler in list(log.handlers):
            handler.close()
            log.removeHandler(handler)


def _train_epoch(model, optimizer, inputs, targets, config, epoch, progress):
    """One pass over the training samples in the (seed, epoch) order. Returns (mean training
    MPJPE, None), or (nan, number of the first batch whose loss was not finite)."""
    model.train()
    n, size = len(inputs), config.batch_size
    batches = math.ceil(n / size)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0]))
    order = torch.randperm(n, generator=generator).to(inputs.device)
    losses = torch.zeros(batches, device=inputs.device)  # per-batch loss, kept on the device
    weights = torch.full((batches,), float(size), device=inputs.device)
    weights[-1] = n - size * (batches - 1)
    running = math.nan
    with tqdm(total=batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
              disable=not progress) as bar:
        for b in range(batches):
            index = order[b * size:(b + 1) * size]
            loss = mpjpe(model(inputs[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[b] = loss.detach()
            if (b + 1) % CHECK_EVERY == 0 or b + 1 == batches:  # one host sync per CHECK_EVERY batches
                running = float((losses[:b + 1] * weights[:b + 1]).sum() / weights[:b + 1].sum())
                if not math.isfinite(running):
                    return math.nan, int(torch.nonzero(~torch.isfinite(losses[:b + 1]))[0]) + 1
                bar.set_postfix(mpjpe=f"{running:.2f} mm", refresh=False)
            bar.update(1)
    return running, None


TIMING_FIELDS = ("seconds", "samples_per_second")


def _checkpoint(config, prepared, model, optimizer, epoch, best_state, best_epoch, best_metric, history) -> dict:
    return {
        "format": checkpoints.FORMAT, "version": checkpoints.VERSION,
        "model_config": config.model.to_dict(),
        "best_state_dict": best_state, "best_epoch": best_epoch, "best_metric": float(best_metric),
        "selected_on": config.select_on,
        "last": {"epoch": epoch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": _rng_state()},
        "normalization": prepared.normalization.to_dict(),
        # metrics only: wall-clock timings (in the log) would make equal runs' checkpoints differ
        "history": [{k: v for k, v in record.items() if k not in TIMING_FIELDS} for record in history],
        "train_config": config.to_dict(), "seed": config.seed, "versions": _versions(),
    }


def _rng_state() -> dict:
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"python": [version, list(state), gauss],
            "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(), "cuda": list(cuda)}


def _set_rng_state(rng: dict) -> None:
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        for index, state in enumerate(rng["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), index)


def _versions() -> dict:
    return {"torch": str(torch.__version__), "numpy": str(np.__version__), "python": platform.python_version()}


def _to_device(array, device) -> torch.Tensor:
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device)


def _check_data(config, prepared) -> dict:
    names = ["train", "test"] + (["val"] if config.select_on == "val" else [])
    model = config.model
    splits = {}
    for name in names:
        split = getattr(prepared, name, None)
        if split is None or len(split) == 0:
            hint = " (prepare the data with val_subjects=...)" if name == "val" else ""
            raise IIVFormerError(f"the {name} split is empty{hint}")
        if split.inputs.shape[1:] != (model.num_view, model.num_joints, model.in_chans):
            raise IIVFormerError(f"the {name} inputs have shape {split.inputs.shape}; the model expects "
                                 f"(N, {model.num_view}, {model.num_joints}, {model.in_chans})")
        splits[name] = split
    return splits


def check_output_paths(checkpoint_path, log_path) -> None:
    """Raise IIVFormerError (one line) unless both files can be written: run before training."""
    _check_writable(Path(checkpoint_path), "checkpoint")
    _check_writable(Path(log_path), "log")


def _check_writable(path: Path, what: str) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise IIVFormerError(f"{what} {path}: the folder {folder} does not exist")
    if path.is_dir():
        raise IIVFormerError(f"{what} {path}: is a folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise IIVFormerError(f"{what} {path}: not writable")


def _load_for_resume(path: Path, config: TrainConfig, prepared) -> dict:
    if not path.exists():
        raise IIVFormerError(f"cannot resume: {path} not found")
    saved = checkpoints.load_checkpoint(path)
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
    norm = prepared.normalization
    if not (np.array_equal(np.asarray(saved["normalization"]["mean"], np.float32), norm.mean)
            and np.array_equal(np.asarray(saved["normalization"]["std"], np.float32), norm.std)):
        differ.append("the training data's normalisation differs (other archives or training subjects)")
    if differ:
        raise IIVFormerError(f"cannot resume from {path}: {'; '.join(differ)}")
    return saved


def _diverged(what: str, config, saved_epoch: int, path: Path) -> str:
    kept = (f"the last good checkpoint (epoch {saved_epoch}) is kept in {path}" if saved_epoch
            else "no epoch was completed, so no checkpoint was written")
    return f"training diverged: {what} (lr {config.lr:g}); {kept}"


def _open_log(path: Path) -> logging.Logger:
    log = logging.Logger("iivformer.train")  # its own logger: not the root logger, no other handlers
    try:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as error:
        raise IIVFormerError(f"log {path}: cannot open ({error.strerror})") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log


def _log_header(log, config, device, prepared, checkpoint_path, saved) -> None:
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        name = f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    versions = _versions()
    log.info("=== IIVFormer training ===")
    log.info(f"device: {name}")
    log.info(f"versions: torch {versions['torch']}, numpy {versions['numpy']}, python {versions['python']}")
    log.info(f"config: {config.to_dict()}")
    sizes = f"{len(prepared.train)} train samples ({', '.join(prepared.train_subjects)}), " \
            f"{len(prepared.test)} test samples ({', '.join(prepared.test_subjects)})"
    if prepared.val is not None and len(prepared.val):
        sizes += f", {len(prepared.val)} validation samples ({', '.join(prepared.val_subjects)})"
    log.info(f"data: {sizes}")
    if config.select_on == "test":
        log.info("best epoch selected on: test MPJPE (the test subjects, as in the published recipe)")
    else:
        log.info(f"best epoch selected on: val MPJPE (held-out training subjects {', '.join(prepared.val_subjects)})")
    log.info(f"checkpoint: {checkpoint_path}")
    if saved is not None:
        log.info(f"resuming after epoch {saved['last']['epoch']} (best epoch {saved['best_epoch']}, "
                 f"{saved['best_metric']:.2f} mm)")


def _log_epoch(log, record, config, checkpoint_path, improved, progress) -> None:
    text = f"epoch {record['epoch']}/{config.epochs}: train MPJPE {record['train_mpjpe']:.2f} mm, " \
           f"test MPJPE {record['test_mpjpe']:.2f} mm"
    if "val_mpjpe" in record:
        text += f", val MPJPE {record['val_mpjpe']:.2f} mm"
    text += f", {record['seconds']:.1f} s, {record['samples_per_second']:.0f} samples/s"
    log.info(text)
    if improved:
        log.info(f"save best model: epoch {record['epoch']}, {config.select_on} MPJPE "
                 f"{record['best_metric']:.2f} mm -> {checkpoint_path}")
    if progress:
        tqdm.write(text + (" (best)" if improved else ""))
