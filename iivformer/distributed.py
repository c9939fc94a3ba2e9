"""Training in several processes: torchrun's environment, the process group, the few collectives,
each process's share of the samples.

``torchrun --nproc_per_node N -m iivformer train ...`` (or ``python -m torch.distributed.run``)
starts N copies of the command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
set; :func:`process_group` reads them and joins the group: gloo on CPU, NCCL on CUDA (each process
its LOCAL_RANK's GPU). Without those variables, or with WORLD_SIZE 1, a run is a plain one and
joins no group (:func:`shard`, :func:`share`, :func:`weighted_mean` and :func:`first_bad_batch`
take None for its group). :func:`shard` and :func:`share` say which samples of a batch or a split
each process takes; what the processes share and who writes what is described in
:mod:`iivformer.train`.

Every collective waits at most ``IIVFORMER_DIST_TIMEOUT`` seconds (default 600) for the other
processes, so that a process that hangs (rather than dies: torchrun ends the others then) makes
the rest fail with one line instead of waiting forever.
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from iivformer.errors import IIVFormerError, short

# torch is imported where it is used: the command line reads rank() without loading it

TIMEOUT_VARIABLE = "IIVFORMER_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600
_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(IIVFormerError):
    """A failure of this process's own part in a multi-process run (its device, a lost peer); every
    process says it, where other errors (the same on every process) are said by rank 0 only."""


@dataclass(frozen=True)
class Group:
    """This process's place in a multi-process run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: "torch.device"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.backend}), this is rank {self.rank}"


def _integer(name: str) -> int:
    text = os.environ.get(name)
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise IIVFormerError(f"multi-process run: the environment variable {name} must be a whole number, "
                             f"not {short(text)} (start with torchrun)") from None
    if value < 0:
        raise IIVFormerError(f"multi-process run: {name} must not be negative, not {value}")
    return value


def environment():
    """(rank, world size, local rank) from torchrun's variables, or None for a plain run (no
    WORLD_SIZE, or WORLD_SIZE 1). Incomplete or inconsistent variables are one line."""
    if os.environ.get("WORLD_SIZE") in (None, "", "1"):
        return None
    world = _integer("WORLD_SIZE")
    if world == 0:
        raise IIVFormerError("multi-process run: WORLD_SIZE must be positive, not 0")
    missing = [name for name in _VARIABLES if not os.environ.get(name)]
    if missing:
        raise IIVFormerError(f"multi-process run: WORLD_SIZE is {world} but {', '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} not set (start with torchrun)")
    rank, local = _integer("RANK"), _integer("LOCAL_RANK")
    if rank >= world:
        raise IIVFormerError(f"multi-process run: RANK {rank} is not below WORLD_SIZE {world}")
    return rank, world, local


def rank() -> int:
    """This process's rank in a torchrun run (0 in a plain run or when the variable is unusable)."""
    try:
        return int(os.environ.get("RANK", 0)) if environment() is not None else 0
    except (ValueError, IIVFormerError):
        return 0


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text in (None, ""):
        return float(DEFAULT_TIMEOUT_S)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise IIVFormerError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, not {short(text)}")
    return value


def _device(name, local_rank: int):
    """The device of process `local_rank`: 'auto' and 'cuda' take GPU number LOCAL_RANK."""
    import torch

    from iivformer import runtime

    if name not in (None, "auto", "cpu", "cuda"):
        requested = runtime.resolve_device(name)  # a one-line error for a bad name
        raise IIVFormerError(f"device {name!r}: in a multi-process run every process takes its LOCAL_RANK's "
                             f"GPU; use 'cuda' (or 'cpu') rather than {requested}")
    if name == "cpu" or (name in (None, "auto") and not torch.cuda.is_available()):
        return torch.device("cpu")
    runtime.resolve_device("cuda")  # one line if CUDA is missing
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedError(f"rank {os.environ.get('RANK')}: LOCAL_RANK {local_rank} has no GPU (this machine "
                               f"has {count}); start at most {count} processes per machine, or train on the CPU "
                               "with --device cpu")
    return torch.device("cuda", local_rank)


@contextmanager
def process_group(device_name):
    """For the block, the :class:`Group` of this process, or None in a plain run. Joins the process
    group (and leaves it at the end) unless the caller already did; then its backend must fit the
    device: NCCL for CUDA, gloo for CPU."""
    import torch
    import torch.distributed as dist

    found = environment()
    if found is None:
        yield None
        return
    rank_, world, local = found
    device = _device(device_name, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    created = not dist.is_initialized()
    if created:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        options = dict(device_id=device) if backend == "nccl" else {}
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()), **options)
        except (RuntimeError, ValueError) as error:  # the store unreachable, a timeout
            raise DistributedError(f"rank {rank_}: cannot join the {world} processes ({backend}): "
                                   f"{' '.join(str(error).split())[:300]}") from None
    else:
        used = str(dist.get_backend())
        if dist.get_world_size() != world or dist.get_rank() != rank_:
            raise IIVFormerError(f"the process group already set up has rank {dist.get_rank()} of "
                                 f"{dist.get_world_size()}, the environment says {rank_} of {world}")
        if backend not in used:
            raise IIVFormerError(f"device {device.type} with the {used} backend: NCCL needs CUDA devices "
                                 "(--device cuda) and CPU training needs gloo")
        backend = used
    try:
        yield Group(rank_, world, local, backend, device)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce(tensor, op: str = "sum"):
    """`tensor` reduced in place over every process ("sum", "min" or "max"); returned for chaining."""
    import torch.distributed as dist

    dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor


def barrier(device) -> None:
    """Wait for every process (a one-element all-reduce: the same call for gloo and NCCL)."""
    import torch

    all_reduce(torch.zeros(1, device=device))


def shard(count: int, group: Group = None) -> range:
    """The positions, among `count` samples (of a global batch, or of a split), that process
    `group.rank` takes: a contiguous share, sizes differing by at most one; in a plain run (`group`
    None), all of them."""
    if group is None:
        return range(count)
    return range(group.rank * count // group.world_size, (group.rank + 1) * count // group.world_size)


def share(index, group: Group = None) -> tuple:
    """(this process's samples of the global batch `index`, the factor of its loss or None). DDP
    averages the processes' gradients; a share of k of the batch's m samples is weighted k*N/m so
    that the average is the batch mean. A process left without samples (a last batch smaller than
    N) takes one with weight 0, so that every process still runs the step. In a plain run (`group`
    None): (`index`, None)."""
    if group is None:
        return index, None
    positions = shard(len(index), group)
    taken = len(positions) * group.world_size
    if taken == len(index):
        return index[positions.start:positions.stop], None
    if not positions:
        return index[:1], 0.0
    return index[positions.start:positions.stop], taken / len(index)


def weighted_mean(values, weights, group: Group = None) -> float:
    """The mean of the tensor `values` weighted by `weights` over every process's entries (summed in
    float64), the same number in every process; in a plain run (`group` None), over this one's."""
    import torch

    if group is None:
        return float((values * weights).sum() / weights.sum())
    sums = all_reduce(torch.stack([(values * weights).sum(), weights.sum()]).double())
    return float(sums[0] / sums[1])


def first_bad_batch(losses, group: Group = None) -> int:
    """The number (from 1) of the first batch whose loss (an entry of the tensor `losses`, one per
    batch) was not finite, in any process; in a plain run (`group` None), in this one."""
    import torch

    bad = torch.nonzero(~torch.isfinite(losses))
    if group is None:
        return int(bad[0]) + 1
    first = torch.tensor([int(bad[0]) if len(bad) else len(losses)], dtype=torch.int64, device=losses.device)
    return int(all_reduce(first, "min")) + 1


def sum_of_shards(measure, group: Group, *tensors):
    """The sum over every process of `measure` (a 0-d tensor) taken on each process's :func:`shard`
    of `tensors` (split alike along their first axis): the whole's value for a measure that adds
    up, such as a sum of errors, with each process measuring only its share."""
    positions = shard(len(tensors[0]), group)
    total = measure(*(tensor[positions.start:positions.stop] for tensor in tensors))
    return all_reduce(total.reshape(1)).reshape(())


def lost(error: BaseException) -> bool:
    """Whether `error` is a collective that failed: another process died, hung past the timeout,
    or the connection broke."""
    import torch.distributed as dist

    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("Connection closed by peer", "Connection reset", "Timed out", "timed out", "[gloo",
                                  "gloo/", "NCCL", "ProcessGroup"))


HELP = """\
several processes: `torchrun --nproc_per_node N -m iivformer train ...` trains one model with
DistributedDataParallel (gloo on CPU; NCCL on CUDA, one GPU per process, LOCAL_RANK's).
--batch_size is the global batch: each process takes batch_size/N samples of every batch (N must
divide it) and --lr is unchanged, so a step is the single-process step up to the order of float
sums (stochastic depth and view dropout draw per process). Every process holds the whole data and
takes its share of the same seeded permutation. Rank 0 alone writes --model_path and --log and
shows progress; the metrics logged are over whole splits (each process evaluates a share, the
sums are added). A process that dies, or hangs for IIVFORMER_DIST_TIMEOUT seconds (default 600),
ends the run; the checkpoint keeps the last epoch every process completed. --resume: every
process reads the same checkpoint. Under torchrun give the log as --log_file: torchrun's own
parser reads --log as an abbreviation of its --log-dir."""
