"""Where and how a run computes: device choice, seeding, denormals, SIGTERM, bf16 autocast and torch.compile."""
import platform
import random
import signal
import threading
import warnings
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from iivformer.errors import IIVFormerError, one_line


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


def describe_device(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H100 ...)' or 'cpu (x86_64, 2 threads)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict:
    """The versions a result depends on: iivformer, torch, numpy, python."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("iivformer")
    except PackageNotFoundError:
        package = "unknown"
    return {"iivformer": package, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": platform.python_version()}


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (every CUDA device too) and make cuDNN deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def start_workers_flushing_denormals() -> bool:
    """Start torch's CPU worker threads with denormals flushed, unless they are running already.

    Float32 values below 1.2e-38 (denormals) are slow: attention's backward pass leaves a few
    thousand of them in a training step, and each multiply touching one takes the processor's slow
    path (the default profile's CPU training took about 1.5x as long; benchmarks/RESULTS.md).
    Whether a thread flushes them to zero is that thread's own mode, copied into the threads it
    creates: so the mode is set here just while a first parallel operation makes torch start its
    workers, then this thread is IEEE again. The workers only ever run torch's work;
    :func:`denormals_flushed` turns the mode on for this thread too while training. Called first
    thing by the command line, the workbench (every notebook) and training. Returns whether this
    CPU can flush them (x86 with SSE3, ARM)."""
    if not torch.set_flush_denormal(True):
        return False
    try:
        torch.ones(1 << 16).add_(1.0)  # above torch's grain size: a parallel region, which starts the workers
    finally:
        torch.set_flush_denormal(False)
    return True


@contextmanager
def denormals_flushed():
    """Inside the block this thread computes denormals as zero (see
    :func:`start_workers_flushing_denormals`); afterwards IEEE arithmetic again, torch's default.
    Values this small are zero in every figure the workbench reports."""
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(False)


@contextmanager
def terminate_as_interrupt():
    """Inside the block, SIGTERM (what schedulers and `kill` send) raises KeyboardInterrupt like
    Ctrl-C, so that the same clean-up runs; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def compiled(module, device) -> tuple:
    """(torch.compile(module), None), or (module, a warning line) when compilation cannot run here:
    a small function is compiled and differentiated first (it draws no random numbers)."""
    try:
        probe = torch.compile(lambda x: torch.nn.functional.gelu(x * 2.0).sum())
        probe(torch.ones(8, device=device, requires_grad=True)).backward()
        return torch.compile(module), None
    except Exception as error:  # noqa: BLE001 - a missing compiler fails in many ways
        reason = one_line(error).split(" Set TORCHDYNAMO_VERBOSE")[0]  # torch's advice on debugging, not ours
        reason = f"{type(error).__name__}: {reason}"
        return module, f"warning: --compile: torch.compile cannot run here ({reason[:200]}); running without it"


def forward_context(precision: str, device: torch.device):
    """A context manager for the forward pass: autocast to bfloat16 for "bf16", nothing for "fp32".
    One IIVFormerError line where the device has no bfloat16 autocast."""
    if precision == "fp32":
        return nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise IIVFormerError(f"precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                             "use --precision fp32")
    if not torch.amp.is_autocast_available(device.type):
        raise IIVFormerError(f"precision bf16: torch has no autocast for {device.type}; use --precision fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns, and disables autocast, for a dtype the device lacks
        try:
            context = torch.autocast(device.type, dtype=torch.bfloat16)
        except (UserWarning, RuntimeError) as error:
            raise IIVFormerError(f"precision bf16 on {device.type}: {one_line(error)[:200]}; use "
                                 "--precision fp32") from None
    return context
