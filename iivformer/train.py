"""The training loop: Adam, the MPJPE loss, the best epoch kept, a checkpoint after every epoch.

The recipe is :class:`iivformer.config.TrainConfig`'s defaults; after every epoch the test MPJPE
is measured and the best epoch's weights are kept (the published code selects on the test
subjects; ``select_on="val"`` selects on held-out training subjects instead).

Mechanics: the prepared arrays go to the device once; every epoch draws batches by index from a
permutation seeded with (seed, epoch); losses stay on the device and are read every
``CHECK_EVERY`` batches (progress bar, divergence check). After every epoch the whole state is
written atomically to one checkpoint (:mod:`iivformer.checkpoint`), so an interrupted run
resumes exactly where it stopped: on CPU, bit-identical to an uninterrupted run.
"""
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from iivformer import checkpoint as checkpoints
from iivformer import runtime
from iivformer.config import TrainConfig
from iivformer.errors import IIVFormerError, TrainingInterrupted
from iivformer.files import check_distinct, check_writable, exclusive_lock
from iivformer.logbook import TrainingLog
from iivformer.metrics import mpjpe  # the training loss (MPJPE, mm)
from iivformer.model import IIVFormer

CHECK_EVERY = 20  # batches between host reads of the running loss


@dataclass
class _Run:
    """What a run carries from epoch to epoch; `best` is (epoch, metric in mm, CPU state dict)."""

    model: IIVFormer
    optimizer: torch.optim.Optimizer
    history: list
    best: tuple
    saved_epoch: int  # the last epoch written to the checkpoint (0: none)


def train(config: TrainConfig, prepared, checkpoint_path="cpn.pth", log_path="cpn.log", resume=False,
          callbacks=(), progress=True) -> list:
    """Train (or with `resume`, continue) and return the history: one record per epoch,
    {"epoch", "train_mpjpe", "test_mpjpe", ["val_mpjpe"], "seconds", "samples_per_second",
    "best_epoch", "best_metric"}; each callback gets every record as it is made."""
    config.validate()
    device = runtime.resolve_device(config.device)
    splits = _check_data(config, prepared)
    checkpoint_path, log_path = check_output_paths(checkpoint_path, log_path)
    with exclusive_lock(checkpoint_path, "checkpoint"), runtime.terminate_as_interrupt():
        saved = checkpoints.load_for_resume(checkpoint_path, config, prepared.normalization) if resume else None
        data = {name: (_to_device(s.inputs, device), _to_device(s.targets, device)) for name, s in splits.items()}
        return _run(config, prepared, data, _start(config, device, saved), device, saved,
                    checkpoint_path, log_path, callbacks, progress)


def _run(config, prepared, data, run, device, saved, checkpoint_path, log_path, callbacks, progress) -> list:
    """The epochs of a run, logged; Ctrl-C and SIGTERM end it with the last completed epoch saved."""
    epoch = run.saved_epoch + 1
    with TrainingLog(log_path, echo=progress) as log:
        try:
            log.header(config, device, prepared, checkpoint_path, saved)
            for epoch in range(run.saved_epoch + 1, config.epochs + 1):
                record, improved = _run_epoch(run, data, config, epoch, progress, checkpoint_path)
                _save(run, config, prepared, epoch, checkpoint_path)
                log.epoch(record, config, checkpoint_path, improved)
                for callback in callbacks:
                    callback(dict(record))
            log.info(f"finished: best epoch {run.best[0]}, {config.select_on} MPJPE {run.best[1]:.2f} mm, "
                     f"in {checkpoint_path}")
            return run.history
        except KeyboardInterrupt:
            message = _interrupted(epoch, run.saved_epoch, checkpoint_path)
            log.info(message)
            raise TrainingInterrupted(message) from None
        except IIVFormerError as error:
            log.info(f"error: {error}")
            raise


def _start(config: TrainConfig, device, saved) -> _Run:
    """A fresh seeded model and optimiser, or the state of a saved run to continue."""
    runtime.seed_everything(config.seed)
    model = IIVFormer(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if saved is None:
        return _Run(model, optimizer, [], (0, math.inf, None), 0)
    model.load_state_dict(saved["last"]["state_dict"])
    optimizer.load_state_dict(saved["last"]["optimizer"])
    checkpoints.restore_rng_state(saved["last"]["rng"])  # last: building the model drew random numbers
    best = (saved["best_epoch"], saved["best_metric"], saved["best_state_dict"])
    return _Run(model, optimizer, list(saved["history"]), best, saved["last"]["epoch"])


def _run_epoch(run: _Run, data: dict, config: TrainConfig, epoch: int, progress: bool, path: Path) -> tuple:
    """Train one epoch, measure every split, keep the best weights. Returns (record, improved)."""
    began = time.perf_counter()
    train_mpjpe, bad_batch = _train_epoch(run.model, run.optimizer, *data["train"], config, epoch, progress)
    train_seconds = time.perf_counter() - began
    if bad_batch is not None:
        raise IIVFormerError(_diverged(f"non-finite loss at epoch {epoch}, batch {bad_batch}", config, run, path))
    record = {"epoch": epoch, "train_mpjpe": train_mpjpe}
    for name in [name for name in data if name != "train"]:
        record[f"{name}_mpjpe"] = evaluate_mpjpe(run.model, *data[name], config.eval_batch_size)
    metric = record[f"{config.select_on}_mpjpe"]
    if not math.isfinite(metric):
        raise IIVFormerError(_diverged(f"non-finite {config.select_on} MPJPE after epoch {epoch}", config, run, path))
    improved = metric < run.best[1]
    if improved:
        run.best = (epoch, metric, {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()})
    record.update(seconds=time.perf_counter() - began, samples_per_second=len(data["train"][0]) / train_seconds,
                  best_epoch=run.best[0], best_metric=run.best[1])
    run.history.append(record)
    return record, improved


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
            present = _drop_views(len(index), inputs.shape[1], config.view_dropout, inputs.device)
            loss = mpjpe(model(inputs[index], present), targets[index])
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


def _drop_views(batch: int, views: int, probability: float, device):
    """None without view dropout; else a (batch, views) bool mask, each view present with
    probability 1 - `probability`, and one random view kept where a sample would have none."""
    if probability == 0:
        return None
    present = torch.rand(batch, views, device=device) >= probability
    kept = torch.randint(views, (batch,), device=device)
    present[torch.arange(batch, device=device), kept] |= ~present.any(dim=1)
    return present


@torch.no_grad()
def evaluate_mpjpe(model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> float:
    """MPJPE (mm) of the model in eval mode over a split already on the device."""
    model.eval()
    dtype = torch.float32 if inputs.device.type == "mps" else torch.float64
    total = torch.zeros((), dtype=dtype, device=inputs.device)
    for start in range(0, len(inputs), batch_size):
        error = torch.linalg.vector_norm(model(inputs[start:start + batch_size]) - targets[start:start + batch_size], dim=-1)
        total += error.sum(dtype=dtype)
    return float(total) / (targets.shape[0] * targets.shape[2])


def _save(run: _Run, config: TrainConfig, prepared, epoch: int, path: Path) -> None:
    checkpoint = checkpoints.training_checkpoint(config, prepared.normalization, run.model, run.optimizer, epoch,
                                                 run.best, run.history, getattr(prepared, "rig", None))
    try:
        checkpoints.save_checkpoint(path, checkpoint)
    except IIVFormerError as error:  # a write that failed (a full disk): the previous file is unchanged
        raise IIVFormerError(f"after epoch {epoch}: {error}") from None
    run.saved_epoch = epoch


def check_output_paths(checkpoint_path, log_path, inputs: dict = None) -> tuple:
    """(checkpoint, log) as paths if both can be written, differ, and are none of the `inputs`
    ({name: path}); one IIVFormerError line otherwise. Run before any data is loaded."""
    check_writable(checkpoint_path, "checkpoint")
    check_writable(log_path, "log")
    check_distinct({"checkpoint": checkpoint_path, "log": log_path}, inputs)
    return Path(checkpoint_path), Path(log_path)


def _to_device(array, device) -> torch.Tensor:
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device)


def _check_data(config: TrainConfig, prepared) -> dict:
    """{name: split} of the splits the run needs (train, test and maybe val), each checked."""
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


def _diverged(what: str, config: TrainConfig, run: _Run, path: Path) -> str:
    kept = (f"the last good checkpoint (epoch {run.saved_epoch}) is kept in {path}" if run.saved_epoch
            else "no epoch was completed, so no checkpoint was written")
    return f"training diverged: {what} (lr {config.lr:g}); {kept}"


def _interrupted(epoch: int, saved_epoch: int, path: Path) -> str:
    if saved_epoch == epoch:
        return f"interrupted after epoch {epoch}, which is saved in {path}; continue with --resume"
    if saved_epoch > 0:
        return (f"interrupted during epoch {epoch}; the last completed epoch ({saved_epoch}) is saved in "
                f"{path}; continue with --resume")
    return f"interrupted during epoch {epoch}; no epoch was completed, so nothing is saved"
