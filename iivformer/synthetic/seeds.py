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
    """Raise IIVFormerError unless seed is an integer in 0..2**32-1."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
        raise IIVFormerError(f"seed must be an integer from 0 to 2**32-1, got {seed!r}")
