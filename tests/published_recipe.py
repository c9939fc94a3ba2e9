"""Deterministic stand-in for the published IIVFormer weights.

The recipe lives in tests/fixtures/state_dict_manifest.json: one numpy generator seeded with
``weight_seed``; for each manifest entry in order, ``0.05 * standard_normal(shape)`` as
float32, plus 1.0 for LayerNorm weights. Tests that need "published" weights import this.
"""

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

MANIFEST_PATH = Path(__file__).parent / "fixtures" / "state_dict_manifest.json"


def load_manifest(manifest_path=MANIFEST_PATH) -> dict:
    with open(manifest_path) as f:
        return json.load(f)


def recipe_state_dict(weight_seed: int, manifest_path=MANIFEST_PATH) -> "OrderedDict[str, torch.Tensor]":
    rng = np.random.default_rng(weight_seed)
    state = OrderedDict()
    for entry in load_manifest(manifest_path)["entries"]:
        w = (0.05 * rng.standard_normal(entry["shape"])).astype(np.float32)
        if entry["layernorm_weight"]:
            w = w + np.float32(1.0)
        state[entry["key"]] = torch.from_numpy(w)
    return state
