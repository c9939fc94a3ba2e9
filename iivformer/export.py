"""Portable exports of a checkpoint's model, each with a model card beside it.

    iivformer export --model_path CKPT --out FILE [--format state_dict|torchscript|onnx]

Formats:

- ``state_dict`` (the default, unchanged): the best weights as a plain state dict, what the
  published code's ``model.load_state_dict(torch.load(path))`` reads
  (:func:`iivformer.checkpoint.export_state_dict`, byte for byte). It takes *normalised* 2D.
- ``torchscript``: the eval-mode model traced with :func:`torch.jit.trace` and saved with
  :func:`torch.jit.save`; ``torch.jit.load(FILE)`` runs it without iivformer.
- ``onnx``: the same graph through torch's TorchScript-based ONNX exporter (``dynamo=False``), opset
  :data:`OPSET`, for onnxruntime and other ONNX runtimes. It needs the ``onnx`` package (the
  ``export`` extra); with ``onnxruntime`` installed the file is checked before it is written.

The TorchScript and ONNX graphs take **pixels**: the 2D normalisation ``(pixels - mean) / std`` of
the training data is part of the graph, so the input is ``keypoints`` (N, V, 17, 2) float32 in the
pixels of the training archives' 2D (as ``iivformer predict`` reads them), the views in the order of
the card's ``camera_ids``; the output is ``pose`` (N, 1, 17, 3) float32, millimetres, root-relative
(the pelvis, joint 0), in the world frame of the model's cameras. The batch axis N is dynamic.
A model trained with view dropout gets a second input ``view_mask`` (N, V) bool, True for the views
present (every sample needs one; the graph does not check it, and a sample without any view gives
NaN); any other model's graph takes all V views and has no mask, as its checkpoint's model does.

A plain state dict such as the published cpn.pth stores no normalisation: its TorchScript or ONNX
export is refused (one line) unless the statistics are given, from Python, as
``export_model(..., normalization=prepared.normalization)`` (what
:func:`iivformer.evaluate.load_for_evaluation` recomputes from its training archives). Its
``state_dict`` export works as before, and its card says the normalisation is not known.

Each TorchScript or ONNX export is checked before it is written: the exported graph (the ONNX file
in onnxruntime, when installed) and the PyTorch model run on the same probe poses (the training
mean plus noise of one standard deviation, and absent views for a mask), and a difference of
:data:`TOLERANCE_MM` or more is refused. The largest difference goes into the card.

The model card is ``FILE.card.json`` (:func:`card_path`, JSON, see :func:`model_card`): format and
version, the source checkpoint's name and SHA-256, the model config, inputs and outputs (names,
shapes, dtype, units), the joint names in order, the camera ids in order, the normalisation (mean
and std (V, 17, 2) and whether the graph includes it), the output frame, the exporter, opset and
versions, the check, and a 3-line usage snippet. The same card is embedded in the file itself for
TorchScript (extra file ``iivformer_card.json``) and ONNX (metadata property ``iivformer_card``).
Files are written atomically; the outputs are checked before any work.
"""
import importlib.util
import inspect
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from iivformer import runtime, skeleton
from iivformer.checkpoint import FORMAT as CHECKPOINT_FORMAT
from iivformer.checkpoint import build_model, load_checkpoint, plain_state_dict, save_checkpoint
from iivformer.errors import CheckpointError, IIVFormerError, one_line
from iivformer.files import atomic_write, check_distinct, check_writable, sha256, write_text
from iivformer.prepare import Normalization

FORMATS = ("state_dict", "torchscript", "onnx")
CARD_FORMAT = "iivformer-export-card"
CARD_VERSION = 1
CARD_SUFFIX = ".card.json"
OPSET = 17  # native LayerNormalization; read by onnxruntime >= 1.11, TensorRT 8.6, OpenVINO 2022.3 and later
TOLERANCE_MM = 0.01
EMBEDDED_CARD = "iivformer_card"  # ONNX metadata key; TorchScript extra file EMBEDDED_CARD + ".json"
PROBE_SAMPLES = 5  # the graphs are traced on 3 samples: the probe checks another batch size
OUTPUT_FRAME = ("millimetres, root-relative: the pelvis (joint 0) is the root, at the origin in the training "
                "targets (the model's own joint-0 output is returned as it is, near the origin); axes of the "
                "world frame of the model's cameras (the rig's calibration, or Human3.6M's world frame)")
_INSTALL = "pip install 'iivformer[export]'"


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def card_path(out) -> Path:
    """Where the model card of an export to `out` goes: ``FILE.card.json`` beside it."""
    out = Path(out)
    return out.with_name(out.name + CARD_SUFFIX)


def check_outputs(out, model_path, format: str = "state_dict") -> None:
    """Before any work: a known format with its packages installed, `out` and its card writable,
    neither of them the checkpoint. One IIVFormerError line otherwise."""
    if format not in FORMATS:
        raise IIVFormerError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    if format == "onnx" and not _installed("onnx"):
        raise IIVFormerError(f"--format onnx needs the onnx package, which is not installed: {_INSTALL}")
    check_writable(out, "--out")
    check_writable(card_path(out), "the model card")
    check_distinct({"--out": out, "the model card": card_path(out)}, {"--model_path": model_path})


def export_model(model_path, out, format: str = "state_dict", normalization: Normalization = None) -> dict:
    """Export the best weights of the checkpoint at `model_path` to `out` as `format` (see the module
    docstring), with its model card at :func:`card_path`. `normalization`: the 2D statistics to use
    instead of the checkpoint's (needed for a plain state dict's TorchScript or ONNX export).
    Returns the card."""
    check_outputs(out, model_path, format)
    checkpoint = load_checkpoint(model_path)
    source = str(model_path)
    model = build_model(checkpoint, source=source).eval()
    statistics, origin = _statistics(checkpoint, normalization, source)
    if format == "state_dict":
        save_checkpoint(out, plain_state_dict(checkpoint))
        card = model_card(checkpoint, model_path, out, format, statistics, origin)
    else:
        if statistics is None:
            raise CheckpointError(
                f"{model_path}: a plain state dict (such as the published cpn.pth) without the 2D normalisation its "
                f"training data gave; --format {format} puts it in the graph: export a checkpoint written by "
                "`iivformer train`, or, from Python, export_model(..., normalization=prepared.normalization) with "
                "the statistics iivformer.evaluate.load_for_evaluation recomputes from its training archives")
        card = _export_graph(checkpoint, model, model_path, out, format, statistics, origin)
    write_text(card_path(out), _card_text(card))
    return card


# ------------------------------------------------------------------ the graph
def _export_graph(checkpoint, model, model_path, out, format, statistics, origin) -> dict:
    """Trace or export the model with its normalisation, check it against PyTorch, then write it with
    its card embedded. Returns the card."""
    source = str(model_path)
    masked = takes_view_mask(checkpoint)
    wrapper = PixelModel(model, statistics).eval().requires_grad_(False)  # outputs need no .detach()
    example = _probe(statistics, masked, samples=3, seed=1)
    if format == "torchscript":
        exported = run = _traced(wrapper, example, source)
    else:
        exported = _onnx_bytes(wrapper, example, masked, source)
        run = _onnx_runner(exported)
    difference = _check(wrapper, run, statistics, masked, format, source)
    check = None if difference is None else {
        "max_abs_difference_mm": difference, "limit_mm": TOLERANCE_MM, "runtime": _runtime_name(format),
        "probe": f"{PROBE_SAMPLES} poses: the training mean plus noise of one standard deviation"
                 + (", some views absent" if masked else "")}
    card = model_card(checkpoint, model_path, out, format, statistics, origin, check=check)
    text = _card_text(card)
    if format == "torchscript":
        def save(temporary):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit.save
                torch.jit.save(exported, str(temporary), _extra_files={EMBEDDED_CARD + ".json": text})

        atomic_write(out, save)
    else:
        data = _with_metadata(exported, text)
        atomic_write(out, lambda temporary: Path(temporary).write_bytes(data))
    return card


class PixelModel(torch.nn.Module):
    """The model with its 2D normalisation in front: (N, V, J, 2) pixels [, (N, V) bool mask] ->
    (N, 1, J, 3) mm. ``(pixels - mean) / std`` in float32, as :func:`iivformer.prepare.normalize_in_place`."""

    def __init__(self, model: torch.nn.Module, normalization: Normalization):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(normalization.mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(normalization.std, np.float32)))

    def forward(self, keypoints: torch.Tensor, view_mask: torch.Tensor = None) -> torch.Tensor:
        return self.model((keypoints - self.mean) / self.std, view_mask)


def takes_view_mask(checkpoint: dict) -> bool:
    """Whether the export takes a view mask: only a model trained with view dropout accepts a subset of
    its views (:func:`iivformer.evaluate.view_mask`)."""
    return bool((checkpoint.get("train_config") or {}).get("view_dropout"))


def _probe(normalization: Normalization, masked: bool, samples: int, seed: int) -> tuple:
    """Inputs to trace or check with: pixels near the training data, and a mask with absent views
    (so that the traced graph is the masked forward; the first sample keeps every view)."""
    generator = np.random.default_rng(seed)
    mean, std = normalization.mean, normalization.std
    pixels = (mean + std * generator.standard_normal((samples,) + mean.shape)).astype(np.float32)
    if not masked:
        return (torch.from_numpy(pixels),)
    views = mean.shape[0]
    mask = generator.random((samples, views)) < 0.6
    mask[np.arange(samples), generator.integers(0, views, samples)] = True  # at least one view each
    mask[0] = True
    if views > 1 and mask.all():
        mask[-1, 0] = False
        mask[-1, 1] = True
    return torch.from_numpy(pixels), torch.from_numpy(mask)


def _traced(wrapper, example, source: str):
    """`wrapper` traced on `example` (TorchScript), the batch axis left symbolic by the tracer."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the mask's Python checks: see the docstring
            return torch.jit.trace(wrapper, example, check_trace=False)
    except Exception as error:  # noqa: BLE001 - the tracer raises many types
        raise IIVFormerError(f"{source}: the TorchScript trace failed ({type(error).__name__}: "
                             f"{one_line(error)[:300]})") from None


def _onnx_bytes(wrapper, example, masked: bool, source: str) -> bytes:
    """The ONNX model of `wrapper`, batch axis dynamic, with the TorchScript-based exporter."""
    names = ["keypoints", "view_mask"] if masked else ["keypoints"]
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
            torch.onnx.export(wrapper, example, buffer, input_names=names, output_names=["pose"],
                              dynamic_axes={name: {0: "batch"} for name in names + ["pose"]},
                              opset_version=OPSET, do_constant_folding=True, **options)
    except Exception as error:  # noqa: BLE001 - the exporter raises many types
        raise IIVFormerError(f"{source}: the ONNX export failed ({type(error).__name__}: "
                             f"{one_line(error)[:300]})") from None
    return buffer.getvalue()


def _onnx_runner(data: bytes):
    """A function running the ONNX model in onnxruntime (CPU), or None without onnxruntime."""
    if not _installed("onnxruntime"):
        return None
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]

    def run(*inputs):
        feeds = {name: value.numpy() for name, value in zip(names, inputs)}
        return torch.from_numpy(session.run(["pose"], feeds)[0])

    return run


def _with_metadata(data: bytes, card_text: str) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    entry = model.metadata_props.add()
    entry.key, entry.value = EMBEDDED_CARD, card_text
    model.doc_string = "IIVFormer: multi-view 2D keypoints (pixels) to a root-relative 3D pose (mm); see the card"
    return model.SerializeToString()


def _check(wrapper, run, normalization, masked: bool, format: str, source: str):
    """The largest difference (mm) between the export and PyTorch on the probe poses; None when no
    runtime is installed to run it (ONNX without onnxruntime). Refused at TOLERANCE_MM or more."""
    if run is None:
        return None
    inputs = _probe(normalization, masked, samples=PROBE_SAMPLES, seed=2)
    with torch.no_grad():
        expected = wrapper(*inputs)
        found = run(*inputs)
    if found.shape != expected.shape:
        raise IIVFormerError(f"{source}: the {format} export gives shape {tuple(found.shape)} for "
                             f"{PROBE_SAMPLES} samples, PyTorch {tuple(expected.shape)}; nothing was written")
    difference = float((found.float() - expected).abs().max())
    if not difference < TOLERANCE_MM:  # NaN too
        raise IIVFormerError(f"{source}: the {format} export differs from PyTorch by {difference:.3g} mm "
                             f"(the limit is {TOLERANCE_MM} mm); nothing was written")
    return difference


def _runtime_name(format: str) -> str:
    if format == "torchscript":
        return f"torch {torch.__version__} (TorchScript)"
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)"


# ------------------------------------------------------------------ the model card
def _statistics(checkpoint: dict, given, source: str):
    """(Normalization or None, where it comes from)."""
    views = checkpoint["model_config"]["num_view"]
    if given is None:
        stored = checkpoint.get("normalization")
        if not stored:
            return None, None
        return Normalization.from_dict(stored), "stored in the checkpoint"
    mean = np.asarray(given.mean, np.float32)
    std = np.asarray(given.std, np.float32)
    shape = (views, skeleton.NUM_JOINTS, 2)
    if mean.shape != shape or std.shape != shape:
        raise IIVFormerError(f"{source}: the given normalisation has shape {mean.shape} (std {std.shape}), but the "
                             f"model takes {views} views of {skeleton.NUM_JOINTS} joints: {shape}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise IIVFormerError(f"{source}: the given normalisation must be finite with a positive std")
    return Normalization(mean, std), "given by the caller"


def model_card(checkpoint: dict, model_path, out, format: str, normalization, origin, check=None) -> dict:
    """The card of an export (see the module docstring); JSON-ready."""
    from iivformer.evaluate import checkpoint_rig, trained_views
    from iivformer.predict import model_camera_ids

    config = dict(checkpoint["model_config"])
    views, joints = config["num_view"], config["num_joints"]
    in_graph = format != "state_dict"
    masked = in_graph and takes_view_mask(checkpoint)
    rig = checkpoint_rig(checkpoint, model_path)
    inputs = [{"name": "keypoints", "shape": ["batch", views, joints, 2], "dtype": "float32",
               "units": ("pixels, as the training archives' 2D (what `iivformer predict` reads); the views in the "
                         "order of camera_ids, the joints in the order of joint_names") if in_graph else
                        "normalised 2D: (pixels - normalization.mean) / normalization.std"}]
    if masked:
        inputs.append({"name": "view_mask", "shape": ["batch", views], "dtype": "bool",
                       "units": "True for the views present; at least one per sample (not checked: a sample "
                                "without any view gives NaN)"})
    stats = _card_normalization(normalization, origin, in_graph)
    export = _card_export(format, Path(out).name)
    source = Path(model_path)
    return {
        "format": CARD_FORMAT, "version": CARD_VERSION,
        "export": export,
        "source": {"checkpoint": source.name, "sha256": sha256(source),
                   "kind": "iivformer checkpoint" if checkpoint.get("format") == CHECKPOINT_FORMAT
                   else "plain state dict",
                   "best_epoch": checkpoint.get("best_epoch"), "best_metric_mm": checkpoint.get("best_metric"),
                   "selected_on": checkpoint.get("selected_on")},
        "model_config": config,
        "inputs": inputs,
        "outputs": [{"name": "pose", "shape": ["batch", 1, joints, 3], "dtype": "float32", "units": OUTPUT_FRAME}],
        "joint_names": list(skeleton.JOINT_NAMES),
        "root_joint": skeleton.JOINT_NAMES[0],
        "camera_ids": model_camera_ids(checkpoint, model_path),
        "views": trained_views(checkpoint),
        "rig": "Human3.6M" if rig is None else rig.name,
        "normalization": stats,
        "output_frame": OUTPUT_FRAME,
        "view_mask": ({"supported": True, "input": "view_mask"} if masked else
                      {"supported": False, "note": "every view must be given" + (
                          "" if in_graph else "; the model's view_mask argument needs a model trained with view "
                                              "dropout")}),
        "check": check,
        "usage": _usage(format, Path(out).name, masked),
    }


def _card_normalization(normalization, origin, in_graph: bool) -> dict:
    """The card's normalisation: the statistics and where they come from, or that they are not known."""
    if normalization is None:
        return {"known": False, "in_graph": False,
                "note": "a plain state dict stores no normalisation: normalise the 2D with the training "
                        "subjects' statistics, as `iivformer evaluate` recomputes them"}
    return {"known": True, "in_graph": in_graph, "source": origin,
            "formula": "(pixels - mean) / std, per view, joint and coordinate",
            "mean": np.asarray(normalization.mean, np.float32).tolist(),
            "std": np.asarray(normalization.std, np.float32).tolist()}


def _card_export(format: str, name: str) -> dict:
    """The card's export section: the format, the file `name`, how it was written, with which versions."""
    versions = {"torch": str(torch.__version__), "iivformer": runtime.versions()["iivformer"]}
    exporter = {"state_dict": "torch.save of the best state dict (iivformer.checkpoint.export_state_dict)",
                "torchscript": "torch.jit.trace of the eval-mode model, torch.jit.save",
                "onnx": "torch.onnx.export, TorchScript-based (dynamo=False)"}[format]
    if format == "onnx":
        import onnx

        versions["onnx"] = onnx.__version__
    return {"format": format, "file": name, "exporter": exporter,
            "opset": OPSET if format == "onnx" else None, "versions": versions,
            "embedded_card": {"torchscript": f"extra file {EMBEDDED_CARD}.json",
                              "onnx": f"metadata property {EMBEDDED_CARD}"}.get(format)}


def _usage(format: str, name: str, masked: bool) -> str:
    mask = ", view_mask" if masked else ""
    if format == "torchscript":
        mask = ", torch.as_tensor(view_mask, dtype=torch.bool)" if masked else ""
        return ("import torch\n"
                f"model = torch.jit.load({name!r})\n"
                f"pose_mm = model(torch.as_tensor(keypoints_px, dtype=torch.float32){mask})  # (N, 1, 17, 3)")
    if format == "onnx":
        feeds = '"keypoints": keypoints_px.astype("float32")' + (', "view_mask": view_mask' if masked else "")
        return ("import onnxruntime\n"
                f"session = onnxruntime.InferenceSession({name!r}, providers=['CPUExecutionProvider'])\n"
                f"pose_mm = session.run(['pose'], {{{feeds}}})[0]  # (N, 1, 17, 3)")
    return ("import torch; from iivformer.model import IIVFormer, ModelConfig\n"
            f"model = IIVFormer(ModelConfig(**card['model_config'])); model.load_state_dict(torch.load({name!r}, "
            "weights_only=True)); model.eval()\n"
            "pose_mm = model(torch.as_tensor(keypoints_normalised, dtype=torch.float32))  # (N, 1, 17, 3)")


def _card_text(card: dict) -> str:
    return json.dumps(card, indent=1, allow_nan=False) + "\n"


def read_card(path) -> dict:
    """The model card beside an export at `path` (``FILE.card.json``)."""
    return json.loads(card_path(path).read_text(encoding="utf-8"))
