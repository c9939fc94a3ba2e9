"""Where and how reproducibly a run computes: device choice and seeding."""
import platform
import random
import signal
import threading
from contextlib import contextmanager

import numpy as np
import torch

from iivformer.errors import IIVFormerError


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
