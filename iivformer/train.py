"""The training loop: Adam, the MPJPE loss, the best epoch kept, a checkpoint after every epoch.

The recipe is :class:`iivformer.config.TrainConfig`'s defaults; after every epoch the test MPJPE
is measured and the best epoch's weights are kept (the published code selects on the test
subjects; ``select_on="val"`` selects on held-out training subjects instead).

Mechanics: the prepared arrays go to the device once; every epoch draws batches by index from a
permutation seeded with (seed, epoch); losses stay on the device and are read every
``CHECK_EVERY`` batches (progress bar, divergence check). After every epoch the whole state is
written atomically to one checkpoint (:mod:`iivformer.checkpoint`), so an interrupted run
resumes exactly where it stopped: on CPU, bit-identical to an uninterrupted run.
``init_from`` (``--init_from``) starts a run from the best weights of a finished checkpoint
instead of fresh ones (fine-tuning, e.g. with view dropout): same model settings, cameras and
normalisation, a fresh optimiser; its path is kept in the checkpoint's train_config.

Speed options (``TrainConfig.precision`` and ``.compile``; ``--precision``, ``--compile``):

- ``precision="bf16"`` runs the training forward pass under ``torch.autocast(device, bfloat16)``;
  the weights, their gradients and Adam stay fp32, and the loss is reduced in fp32. ``"fp32"``
  (the default) is the loop exactly as without the option.
- ``compile=True`` trains through ``torch.compile(model)``; where compilation cannot run (no C
  compiler for the CPU backend, no Triton for CUDA) one warning line says so and training goes
  on eagerly.
- The evaluation after every epoch runs the plain model in fp32 in both cases, so the metrics in
  the history and the best-epoch choice are what ``iivformer evaluate`` gives for those weights.
- Both are recorded in the checkpoint's ``train_config`` but are not compared on resume: they
  change how fast the same recipe runs, not what it learns (bf16 rounds differently, so a resumed
  run that changes precision is not bit-identical to one that did not; the log says so).

Several processes (``torchrun --nproc_per_node N -m iivformer train ...``; see
:mod:`iivformer.distributed`) train one model with DistributedDataParallel, gloo on CPU and NCCL
on CUDA (one GPU per process):

- ``batch_size`` is the global batch: each of the N processes takes ``batch_size / N`` samples of
  every global batch (a batch size N does not divide is refused), the learning rate is unchanged,
  and DDP averages the processes' gradients, so a step is the single-process step up to the order
  of float sums. The last, partial batch is split as evenly as it goes, each process's loss
  weighted by its share so that the average is still the mean over the batch.
- Every process holds the whole prepared data on its device (it is small) and takes its slice of
  the same seeded (seed, epoch) permutation a single process draws.
- Random draws of training (stochastic depth, view dropout) come, in each epoch, from a generator
  seeded with (seed, epoch, rank): the processes draw independently and a resumed run draws as an
  uninterrupted one. They are therefore not the single process's draws: runs with those
  features match a single-process run in distribution, runs without them up to float sums.
- The training MPJPE is the mean over all samples (summed over the processes); each process
  evaluates its share of every evaluation split and the error sums are added up (float64), so
  the history holds whole-split metrics, the same on every process.
- Rank 0 alone writes the checkpoint and the log and shows progress; callbacks run on rank 0.
  A process that dies or stops answering (``IIVFORMER_DIST_TIMEOUT`` seconds) ends the run with
  one line; an epoch counts only once every process has finished it, so the checkpoint always
  holds a completed epoch. Resume: every process reads the same checkpoint.
"""
import math
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from iivformer import checkpoint as checkpoints
from iivformer import distributed, runtime
from iivformer.config import TrainConfig
from iivformer.errors import IIVFormerError, TrainingInterrupted, one_line
from iivformer.files import check_output_paths, exclusive_lock
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
    forward: object = None  # what a training step calls: the model, or it wrapped (DDP, torch.compile)
    group: distributed.Group = None  # this process's place in a multi-process run; None: a plain run
    compile_warning: str = None  # why --compile fell back to eager, if it did


def train(config: TrainConfig, prepared, checkpoint_path="cpn.pth", log_path="cpn.log", resume=False,
          callbacks=(), progress=True) -> list:
    """Train (or with `resume`, continue) and return the history: one record per epoch,
    {"epoch", "train_mpjpe", "test_mpjpe", ["val_mpjpe"], "seconds", "samples_per_second",
    "best_epoch", "best_metric"}; each callback gets every record as it is made.

    Started by torchrun (several processes), every process calls this with the same arguments;
    see the module docstring for what they share. Only rank 0 writes, shows progress and calls
    the callbacks; every process returns the same history. Denormal floats count as zero while
    it trains (runtime.denormals_flushed)."""
    config.validate()
    runtime.start_workers_flushing_denormals()
    ranks = distributed.environment()
    if ranks is not None and config.batch_size % ranks[1]:
        raise IIVFormerError(f"batch_size {config.batch_size} is the global batch and must be divisible by the "
                             f"{ranks[1]} processes (each takes batch_size / {ranks[1]} samples of every batch)")
    device = runtime.resolve_device(config.device) if ranks is None else None
    splits = _check_data(config, prepared)
    initial = checkpoints.load_initial_weights(config.init_from, config, prepared.normalization) \
        if config.init_from and not resume else None
    checkpoint_path, log_path = check_output_paths(checkpoint_path, log_path)
    with distributed.process_group(config.device) as group:
        device = group.device if group is not None else device
        runtime.forward_context(config.precision, device)  # bf16 where the device lacks it: one line before any work
        main = group is None or group.main
        lock = exclusive_lock(checkpoint_path, "checkpoint") if main else nullcontext()
        with lock, runtime.terminate_as_interrupt(), runtime.denormals_flushed():
            saved = checkpoints.load_for_resume(checkpoint_path, config, prepared.normalization) if resume else None
            data = {name: (_to_device(s.inputs, device), _to_device(s.targets, device)) for name, s in splits.items()}
            try:
                run = _start(config, device, saved, group, initial)
            except Exception as error:  # noqa: BLE001 - DDP's first broadcast can meet a dead process
                if group is None or not distributed.lost(error):
                    raise
                raise distributed.DistributedError(f"rank {group.rank}: another training process died or stopped "
                                                   f"answering before training began ({one_line(error)[:160]})"
                                                   ) from None
            return _run(config, prepared, data, run, device, saved, checkpoint_path, log_path,
                        callbacks if main else (), progress and main)


def _run(config, prepared, data, run, device, saved, checkpoint_path, log_path, callbacks, progress) -> list:
    """The epochs of a run, logged; Ctrl-C and SIGTERM end it with the last completed epoch saved."""
    epoch = run.saved_epoch + 1
    main = run.group is None or run.group.main
    with (TrainingLog(log_path, echo=progress) if main else _Silent()) as log:
        try:
            log.header(config, device, prepared, checkpoint_path, saved)
            for line in _speed_lines(config, run, saved):
                log.info(line)
            for epoch in range(run.saved_epoch + 1, config.epochs + 1):
                record, improved = _run_epoch(run, data, config, epoch, progress, checkpoint_path)
                if main:
                    _save(run, config, prepared, epoch, checkpoint_path)
                else:
                    run.saved_epoch = epoch  # rank 0 saved it
                log.epoch(record, config, checkpoint_path, improved)
                for callback in callbacks:
                    callback(dict(record))
            if run.group is not None:
                distributed.barrier(device)  # every process returns once the last checkpoint is written
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
        except Exception as error:  # noqa: BLE001 - turned into one line only when recognised
            failure = _failure(error, config, run, epoch, checkpoint_path)
            if failure is None:
                raise
            log.info(f"error: {failure}")
            raise failure from None


class _Silent:
    """The log of a process other than rank 0: it writes nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _speed_lines(config, run, saved) -> list:
    """Log lines on what changes the speed: processes, precision, compile (and what a resume changed)."""
    lines = []
    if run.group is not None:
        lines.append(f"processes: {run.group.world_size} ({run.group.backend}); each takes "
                     f"{config.batch_size // run.group.world_size} samples of every global batch of "
                     f"{config.batch_size}")
    if saved is not None:
        before = {key: saved["train_config"].get(key, checkpoints.TRAIN_DEFAULTS.get(key, value))
                  for key, value in (("precision", "fp32"), ("compile", False))}
        changed = [f"{key} {before[key]} -> {getattr(config, key)}" for key in before
                   if before[key] != getattr(config, key)]
        if changed:
            lines.append(f"resumed with {', '.join(changed)} (how fast, not what is learned; bf16 rounds "
                         "differently from fp32)")
    if run.compile_warning:
        lines.append(run.compile_warning)
    return lines


def _failure(error: Exception, config, run, epoch: int, path: Path):
    """One IIVFormerError line for a failure we recognise (a lost process, torch.compile), else None."""
    kept = (f"the last completed epoch ({run.saved_epoch}) is saved in {path}" if run.saved_epoch
            else "no epoch was completed, so nothing is saved")
    if run.group is not None and distributed.lost(error):
        text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\] ", "", one_line(error))  # gloo's source file and line
        return distributed.DistributedError(
            f"rank {run.group.rank}: another training process died or stopped answering during epoch {epoch} "
            f"({type(error).__name__}: {text[:160]}); {kept}")
    if config.compile and type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
        return IIVFormerError(f"torch.compile failed on the model ({type(error).__name__}: "
                              f"{one_line(error)[:200]}); train without --compile; {kept}")
    return None


def _start(config: TrainConfig, device, saved, group=None, initial=None) -> _Run:
    """A fresh seeded model (with the `initial` weights, if given) and optimiser, or the state of a
    saved run to continue; `forward` is what the training steps call (the model, under DDP and/or
    torch.compile when asked)."""
    runtime.seed_everything(config.seed)
    model = IIVFormer(config.model).to(device)
    if initial is not None:
        model.load_state_dict(initial)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if saved is None:
        run = _Run(model, optimizer, [], (0, math.inf, None), 0)
    else:
        model.load_state_dict(saved["last"]["state_dict"])
        optimizer.load_state_dict(saved["last"]["optimizer"])
        checkpoints.restore_rng_state(saved["last"]["rng"])  # last: building the model drew random numbers
        best = (saved["best_epoch"], saved["best_metric"], saved["best_state_dict"])
        run = _Run(model, optimizer, list(saved["history"]), best, saved["last"]["epoch"])
    run.group, run.forward = group, model
    if group is not None:  # the processes' weights start equal: DDP copies rank 0's (equal already)
        run.forward = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        run.forward, run.compile_warning = runtime.compiled(run.forward, device)
        if run.compile_warning and (group is None or group.main):
            print(run.compile_warning, file=sys.stderr)
    return run


def _run_epoch(run: _Run, data: dict, config: TrainConfig, epoch: int, progress: bool, path: Path) -> tuple:
    """Train one epoch, measure every split, keep the best weights. Returns (record, improved)."""
    began = time.perf_counter()
    train_mpjpe, bad_batch = _train_epoch(run, *data["train"], config, epoch, progress)
    train_seconds = time.perf_counter() - began
    if bad_batch is not None:
        raise IIVFormerError(_diverged(f"non-finite loss at epoch {epoch}, batch {bad_batch}", config, run, path))
    record = {"epoch": epoch, "train_mpjpe": train_mpjpe}
    for name in [name for name in data if name != "train"]:
        record[f"{name}_mpjpe"] = _evaluate(run, *data[name], config.eval_batch_size)
    metric = record[f"{config.select_on}_mpjpe"]
    if not math.isfinite(metric):
        raise IIVFormerError(_diverged(f"non-finite {config.select_on} MPJPE after epoch {epoch}", config, run, path))
    improved = metric < run.best[1]
    if improved:  # only rank 0 writes, so only it keeps a copy of the best weights
        state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()} \
            if run.group is None or run.group.main else None
        run.best = (epoch, metric, state)
    record.update(seconds=time.perf_counter() - began, samples_per_second=len(data["train"][0]) / train_seconds,
                  best_epoch=run.best[0], best_metric=run.best[1])
    run.history.append(record)
    return record, improved


def _train_epoch(run: _Run, inputs, targets, config, epoch, progress):
    """One pass over the training samples in the (seed, epoch) order (in several processes, this
    process's share of every batch). Returns (mean training MPJPE over all samples, None), or
    (nan, number of the first batch whose loss was not finite)."""
    model, optimizer, group = run.forward, run.optimizer, run.group
    run.model.train()
    n, size = len(inputs), config.batch_size
    batches = math.ceil(n / size)
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0]))
    order = torch.randperm(n, generator=generator).to(inputs.device)
    losses = torch.zeros(batches, device=inputs.device)  # per-batch loss, kept on the device
    share = size if group is None else size // group.world_size  # the samples this process takes of a batch
    weights = torch.full((batches,), float(share), device=inputs.device)
    weights[-1] = len(distributed.shard(n - size * (batches - 1), group))  # and of the last one
    if group is not None:
        torch.manual_seed(int(np.random.SeedSequence([config.seed, epoch, group.rank]).generate_state(1)[0]))
    autocast = runtime.forward_context(config.precision, inputs.device)
    running = math.nan
    with tqdm(total=batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
              disable=not progress) as bar:
        for b in range(batches):
            index, scale = distributed.share(order[b * size:(b + 1) * size], group)
            present = _drop_views(len(index), inputs.shape[1], config.view_dropout, inputs.device)
            if config.precision == "fp32":
                loss = mpjpe(model(inputs[index], present), targets[index])
            else:
                with autocast:
                    predicted = model(inputs[index], present)
                loss = mpjpe(predicted.float(), targets[index])  # the loss reduced in fp32
            optimizer.zero_grad(set_to_none=True)
            (loss if scale is None else loss * scale).backward()
            optimizer.step()
            losses[b] = loss.detach()
            if (b + 1) % CHECK_EVERY == 0 or b + 1 == batches:  # one host sync per CHECK_EVERY batches
                running = distributed.weighted_mean(losses[:b + 1], weights[:b + 1], group)  # over all samples
                if not math.isfinite(running):
                    return math.nan, distributed.first_bad_batch(losses[:b + 1], group)
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
    return float(_error_sum(model, inputs, targets, batch_size)) / (targets.shape[0] * targets.shape[2])


@torch.no_grad()
def _error_sum(model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The sum of the joint errors (mm) of the model in eval mode, a 0-d tensor (float64, except on MPS)."""
    model.eval()
    dtype = torch.float32 if inputs.device.type == "mps" else torch.float64
    total = torch.zeros((), dtype=dtype, device=inputs.device)
    for start in range(0, len(inputs), batch_size):
        error = torch.linalg.vector_norm(model(inputs[start:start + batch_size]) - targets[start:start + batch_size], dim=-1)
        total += error.sum(dtype=dtype)
    return total


def _evaluate(run: _Run, inputs, targets, batch_size: int) -> float:
    """MPJPE (mm) over a whole split: the plain model (fp32, not compiled); in several processes
    each measures its share and the sums are added up."""
    if run.group is None:
        return evaluate_mpjpe(run.model, inputs, targets, batch_size)
    total = distributed.sum_of_shards(lambda x, y: _error_sum(run.model, x, y, batch_size), run.group,
                                      inputs, targets)
    return float(total) / (targets.shape[0] * targets.shape[2])


def _save(run: _Run, config: TrainConfig, prepared, epoch: int, path: Path) -> None:
    checkpoint = checkpoints.training_checkpoint(config, prepared.normalization, run.model, run.optimizer, epoch,
                                                 run.best, run.history, getattr(prepared, "rig", None))
    try:
        checkpoints.save_checkpoint(path, checkpoint)
    except IIVFormerError as error:  # a write that failed (a full disk): the previous file is unchanged
        raise IIVFormerError(f"after epoch {epoch}: {error}") from None
    run.saved_epoch = epoch


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
