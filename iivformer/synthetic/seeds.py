"""The user's seed and the independent random streams drawn from it.

Every part of the dataset (recording lengths, a subject's body, a recording's motion, a recording's detections)
gets its own generator, seeded with the user's seed and a checksum of what it is for, so that
changing one part never shifts the random numbers of another.
"""
import zlib

import numpy as np

from iivformer.errors import IIVFormerError


def tag(*parts) -> int:
    """A fixed integer naming one random stream, e.g. tag("take", "S1", "Walking 1")."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def check_seed(seed) -> None:
    """Raise IIVFormerError unless seed is a non-negative integer."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise IIVFormerError(f"seed must be a non-negative integer, got {seed!r}")
