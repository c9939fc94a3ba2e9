"""The flags the subcommands share: checked value types, the data flags and the archives they name."""
import argparse
import os
import sys

from iivformer import distributed, workbench
from iivformer.archives import find_archives
from iivformer.config import ModelConfig, TrainConfig
from iivformer.errors import IIVFormerError
from iivformer.npz import DEFAULT_MAX_GB, LIMIT_VARIABLE

_PUBLISHED = {**TrainConfig().to_dict(), **ModelConfig().to_dict()}  # for the help texts


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _number(text) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text):
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text):
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def seed(text):
    value = positive_int(text) if text.strip() != "0" else 0
    if value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be below 2**32, got {value}")
    return value


def published(name: str) -> str:
    return f"(published: {_PUBLISHED[name]})"


def archives(args) -> tuple:
    """The archive pair from the flags, or the default one found in the data folder."""
    if args.data_3d and args.data_2d:
        return args.data_3d, args.data_2d
    if args.data_3d or args.data_2d:
        raise IIVFormerError("give both --data_3d and --data_2d, or neither to use the archives in data/")
    folder = workbench.data_dir()
    found = find_archives(folder)
    if found is None:
        raise IIVFormerError(f"no archives in {folder}: link the Human3.6M archives there (see data/README.md) "
                             "or make the synthetic default with `iivformer synth`")
    if distributed.rank() == 0:  # in a multi-process run, rank 0 speaks for all
        print(f"using the {found[2]} archives {found[0]} and {found[1]}", file=sys.stderr)
    return found[0], found[1]


def add_data_flags(parser):
    """--data_3d, --data_2d (read by :func:`archives`) and --max_archive_gb (by :func:`apply_limits`)."""
    parser.add_argument("--data_3d", help="3D archive (VideoPose3D format); default: found in data/")
    parser.add_argument("--data_2d", help="2D archive (VideoPose3D format); default: found in data/")
    parser.add_argument("--max_archive_gb", type=positive_float,
                        help=f"largest archive content read, in GiB (default {DEFAULT_MAX_GB}; sets {LIMIT_VARIABLE})")


def apply_limits(args) -> None:
    """--max_archive_gb, where given, as the environment variable the archive reader follows."""
    if getattr(args, "max_archive_gb", None):
        os.environ[LIMIT_VARIABLE] = f"{args.max_archive_gb:f}"

