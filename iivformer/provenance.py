"""Where a number comes from: the files, subjects, protocol, versions, device and date behind an
evaluation, recorded beside it so that two numbers can be told apart ("why does my number differ?").

The published checkpoint ``cpn.pth`` is recognised by its SHA-256, and the paper's own figures are
given beside it, labelled as such.
"""
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from iivformer import runtime, skeleton
from iivformer.cameras import camera_ids
from iivformer.files import sha256

PROTOCOL = {
    "frames": "every frame of the chosen subjects (no frame skipping)",
    "joints": f"{skeleton.NUM_JOINTS} Human3.6M joints",
    "coordinates": "root-relative (joint 0 subtracted), world frame, millimetres",
    "per_action": "frame-weighted mean over all frames of the action's recordings "
                  "(archive keys grouped by the text before the first space)",
    "mean": "unweighted mean over the actions",
    "p1": "MPJPE: mean Euclidean joint error",
    "p2": "P-MPJPE: MPJPE after a similarity Procrustes alignment (scale, rotation, translation) per frame",
}
PUBLISHED_MM = {"p1": 30.9, "p2": 24.0}  # the paper's Human3.6M figures (S9+S11, CPN detections)
PUBLISHED_CHECKPOINTS = {  # SHA-256 -> what the paper reports for that file
    "bca9b8c6dc0a998af05c03ab67d6e391bab369c6694c70f917c9ebabb2209d60": {
        "name": "cpn.pth", **PUBLISHED_MM,
        "reported": "as reported in the IIVFormer paper: Human3.6M S9+S11, CPN 2D detections"},
}
BIBTEX = """@article{peng2025iivformer,
  title   = {{IIVFormer}: Factorized Intra-View and Inter-View Attention for Multi-View
             {2D}-to-{3D} Human Pose Lifting},
  author  = {Peng, Guozheng},
  journal = {The Visual Computer},
  year    = {2025},
  note    = {submitted}
}"""


def file_record(path) -> dict:
    """{"name", "sha256", "bytes"} of a file: what identifies it wherever it is kept."""
    path = Path(path)
    return {"name": path.name, "sha256": sha256(path), "bytes": path.stat().st_size}


def now() -> str:
    """The date and time in UTC (ISO 8601); SOURCE_DATE_EPOCH, when set, fixes it (reproducible files)."""
    fixed = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(fixed) if fixed and fixed.isdigit() else time.time()
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(method: str, checkpoint_path, data_3d, data_2d, subjects, frames: int, device,
             normalization: str, views=None, rig=None) -> dict:
    """The provenance block of an evaluation (see the module docstring); `rig`: the archives' rig
    (None: Human3.6M's cameras)."""
    checkpoint = file_record(checkpoint_path) if checkpoint_path else None
    if checkpoint:
        checkpoint["published"] = PUBLISHED_CHECKPOINTS.get(checkpoint["sha256"])
    ids = camera_ids(rig)
    views = list(range(len(ids))) if views is None else list(views)
    return {
        "method": method, "checkpoint": checkpoint,
        "data_3d": file_record(data_3d), "data_2d": file_record(data_2d),
        "subjects": list(subjects), "frames": int(frames), "views": views,
        "cameras": [ids[view] for view in views], "rig": rig.to_dict() if rig is not None else None,
        "normalization": normalization, "protocol": dict(PROTOCOL),
        "versions": runtime.versions(), "device": runtime.describe_device(device) if device is not None else None,
        "date": now(),
    }


def _frames_taken(provenance: dict) -> str:
    every = provenance.get("every", 1)
    return "all frames" if every == 1 else f"one frame in {every}"


def caption(provenance: dict) -> str:
    """One line for a table or figure: method, checkpoint, data, subjects, frames, views, versions, date."""
    if not provenance:
        return ""
    checkpoint = provenance.get("checkpoint")
    model = f"{checkpoint['name']} ({checkpoint['sha256'][:12]})" if checkpoint else "no checkpoint"
    versions = provenance.get("versions", {})
    return (f"{provenance['method']}, {model}, on {'+'.join(provenance['subjects'])} of "
            f"{provenance['data_2d']['name']} ({provenance['data_2d']['sha256'][:12]}): {provenance['frames']} frames, "
            f"{len(provenance['views'])} views, {_frames_taken(provenance)}, 17 joints, root-relative; "
            f"mean over actions. "
            f"iivformer {versions.get('iivformer')}, torch {versions.get('torch')}, {provenance['date'][:10]}")


def published_reference(provenance: dict):
    """{"p1": mm, "p2": mm, "reported": text} when the evaluated checkpoint is the published one."""
    checkpoint = (provenance or {}).get("checkpoint") or {}
    return checkpoint.get("published")
