"""Hostile and damaged checkpoints: each is refused with one CheckpointError line naming the file
(and for a resume, the field) before anything large is allocated and before any bad value is used."""
import copy
import dataclasses
import math
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iivformer import checkpoint as ck
from iivformer.npz import LIMIT_VARIABLE
from iivformer import prepare, resume, synthetic, train, weights
from iivformer.config import TrainConfig
from iivformer.errors import CheckpointError, IIVFormerError
from iivformer.model import IIVFormer, ModelConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ModelConfig(num_view=2, num_joints=3, embed_dim_ratio=2, depth=2, num_heads=1)  # a few KB of weights
TINY = ModelConfig(embed_dim_ratio=4, depth=2, num_heads=2)  # 4 views, 17 joints: trains on the synthetic data
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def refused(call, path, *fragments, error=CheckpointError) -> str:
    """The one-line message of the `error` that `call(path)` raises; it names `path` and holds `fragments`."""
    with pytest.raises(error) as info:
        call(path)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def small_state(config=SMALL, seed=0) -> OrderedDict:
    torch.manual_seed(seed)
    return IIVFormer(config).state_dict()


def save(path, value) -> Path:
    torch.save(value, path)
    return Path(path)


def project_checkpoint(state=None, config=SMALL, **changes) -> dict:
    """A project checkpoint with weights only (no training state), its normalisation of the config's shape."""
    shape = (config.num_view, config.num_joints, config.in_chans)
    value = {"format": ck.FORMAT, "version": ck.VERSION, "model_config": config.to_dict(),
             "best_state_dict": state if state is not None else small_state(config),
             "normalization": {"mean": np.zeros(shape).tolist(), "std": np.ones(shape).tolist()}}
    value.update(changes)
    return value


# ------------------------------------------------------------------ sizes declared, not stored
def test_a_zero_stride_tensor_is_refused_before_its_shape_is_used(tmp_path):
    state = small_state()
    state["Intra_pos_embed"] = torch.zeros(1).expand(1, 10 ** 7, 32)  # 1.28 GB declared over 4 bytes
    path = save(tmp_path / "cpn.pth", state)
    assert path.stat().st_size < 50_000  # torch.save keeps the 4-byte storage
    refused(ck.load_checkpoint, path, "tensor Intra_pos_embed of shape (1, 10000000, 32) reuses stored numbers",
            "strides (0, 0, 0)")


def test_overlapping_strides_and_tensors_elsewhere_are_refused(tmp_path):
    state = small_state()
    state["Intra_pos_embed"] = torch.zeros(10 ** 4 + 31).as_strided((1, 10 ** 4, 32), (1, 1, 1))
    refused(ck.load_checkpoint, save(tmp_path / "overlap.pth", state), "Intra_pos_embed", "reuses stored numbers")
    value = project_checkpoint(last={"epoch": 1, "state_dict": small_state(), "rng": {},
                                     "optimizer": {"state": {0: {"exp_avg": torch.zeros(1).expand(10 ** 8)}}}})
    refused(ck.load_checkpoint, save(tmp_path / "run.pth", value), "tensor last.optimizer.state.0.exp_avg")


@pytest.mark.parametrize("changes", [
    {"embed_dim_ratio": 10 ** 6, "num_heads": 1},
    {"depth": 10 ** 5},
    {"num_joints": 10 ** 7},
    {"num_view": 10 ** 6},
    {"embed_dim_ratio": 2048, "num_heads": 8, "num_joints": 17, "num_view": 4},  # within the field limits
])
def test_a_billion_parameter_config_is_refused_before_anything_is_built(tmp_path, monkeypatch, changes):
    config = {**SMALL.to_dict(), **changes}
    path = save(tmp_path / "big.pth", project_checkpoint(model_config=config))
    assert path.stat().st_size < 50_000
    built = []
    monkeypatch.setattr(IIVFormer, "__init__", lambda self, *a, **k: built.append(a) or 1 / 0)
    message = refused(ck.load_checkpoint, path)
    assert ("parameters" in message and "more than 1,000,000,000" in message) or "above the limit" in message
    assert any(f"{name} {value}" in message for name, value in changes.items()) or "parameters" in message
    assert not built


def test_the_parameter_count_in_the_refusal_is_the_models(tmp_path):
    config = {**ModelConfig().to_dict(), "embed_dim_ratio": 256, "depth": 8}  # 8 times wider, twice as deep
    path = save(tmp_path / "wide.pth", project_checkpoint(model_config=config))
    refused(ck.load_checkpoint, path, "1,217,016,120 parameters", "more than 1,000,000,000")


def test_block_keys_declaring_a_deep_model_are_refused(tmp_path):
    state = small_state()
    for block in range(2, 300):
        state[f"Intra_blocks.{block}.norm1.weight"] = torch.zeros(2)
    refused(ck.load_checkpoint, save(tmp_path / "deep.pth", state), "depth 300 is above the limit of 128")


PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys
    from iivformer.checkpoint import load_checkpoint
    from iivformer.errors import CheckpointError
    for path in sys.argv[1:]:
        try:
            load_checkpoint(path)
        except CheckpointError as error:
            print(error)
        else:
            raise SystemExit(f"{path} was accepted")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
""")


def test_peak_memory_of_refusing_huge_declarations(tmp_path):
    state = small_state()
    state["Intra_pos_embed"] = torch.zeros(1).expand(1, 10 ** 7, 32)
    paths = [save(tmp_path / "expanded.pth", state)]
    for name, value in (("embed_dim_ratio", 10 ** 6), ("depth", 10 ** 5), ("num_joints", 10 ** 7)):
        config = {**SMALL.to_dict(), name: value, "num_heads": 1}
        paths.append(save(tmp_path / f"{name}.pth", project_checkpoint(model_config=config)))
    assert all(path.stat().st_size < 50_000 for path in paths)
    completed = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, *map(str, paths)], capture_output=True,
                               text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == len(paths) + 1 and all(str(path) in line for path, line in zip(paths, lines))
    peak_bytes = int(lines[-1]) * 1024
    print(f"peak memory of the refusals: {peak_bytes / 2 ** 20:.0f} MiB")
    assert peak_bytes < 0.75 * 2 ** 30  # a built model would need tens of GB; torch alone takes ~300 MB


# ------------------------------------------------------------------ the file and its zip directory
def rewrite_zip(source: Path, target: Path, declare=None, extra=None) -> Path:
    """`source`'s members copied into `target`; `declare` {name: size} changes the sizes the
    directory declares, `extra` {name: bytes} adds deflated members."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            out.writestr(info, archive.read(info))
        for name, data in (extra or {}).items():
            out.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        for name, size in (declare or {}).items():
            out.getinfo(name).file_size = size
    return target


def test_a_member_declaring_20_gb_is_refused_before_anything_is_inflated(tmp_path, monkeypatch):
    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)
    good = save(tmp_path / "good.pth", small_state())
    member = next(name for name in zipfile.ZipFile(good).namelist() if name.endswith("data.pkl"))
    path = rewrite_zip(good, tmp_path / "big.pth", declare={member: 20 * 10 ** 9})
    monkeypatch.setattr(zipfile.ZipFile, "testzip", lambda self: pytest.fail("inflated before the size check"))
    refused(ck.load_checkpoint, path, member, "20,000,000,000 bytes", "4 GiB", "IIVFORMER_MAX_ARCHIVE_GB")


def test_the_limit_counts_all_members_and_follows_the_environment(tmp_path, monkeypatch):
    good = save(tmp_path / "good.pth", small_state())
    bomb = rewrite_zip(good, tmp_path / "bomb.pth", extra={"archive/zeros": bytes(8 * 2 ** 20)})
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv(LIMIT_VARIABLE, "0.005")  # 5 MiB
    refused(ck.load_checkpoint, bomb, "archive/zeros", "0.005 GiB", "IIVFORMER_MAX_ARCHIVE_GB")
    monkeypatch.setenv(LIMIT_VARIABLE, "1e-6")
    refused(ck.load_checkpoint, good, "more than the limit of", LIMIT_VARIABLE)
    monkeypatch.setenv(LIMIT_VARIABLE, "0.5")
    assert ck.load_checkpoint(good)["format"] == "state_dict"
    for text in ("abc", "0", "-1", "nan", "inf"):
        monkeypatch.setenv(LIMIT_VARIABLE, text)
        with pytest.raises(IIVFormerError, match="IIVFORMER_MAX_ARCHIVE_GB must be a positive number"):
            ck.load_checkpoint(good)


def test_files_that_are_not_regular_are_refused_unread(tmp_path):
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    for path in [fifo, tmp_path, Path("/dev/zero")] if Path("/dev/zero").exists() else [fifo, tmp_path]:
        refused(ck.load_checkpoint, path, "not a regular file")


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_name_the_tensor(tmp_path, bad):
    state = small_state()
    state["Inter_blocks.1.mlp.fc1.weight"].view(-1)[[0, 2, 5]] = bad
    path = save(tmp_path / "cpn.pth", state)
    refused(ck.load_checkpoint, path,
            f"{path}: tensor Inter_blocks.1.mlp.fc1.weight has 3 non-finite values (NaN or infinite)")


@pytest.mark.parametrize("where", ["best_state_dict", "last.state_dict"])
def test_non_finite_weights_of_either_set_are_refused(tmp_path, where):
    state = small_state()
    state["head.1.bias"][1] = float("nan")
    value = project_checkpoint(last={"epoch": 1, "state_dict": small_state(seed=1)})
    if where == "best_state_dict":
        value["best_state_dict"] = state
    else:
        value["last"]["state_dict"] = state
    refused(ck.load_checkpoint, save(tmp_path / "run.pth", value), f"tensor head.1.bias of {where} has 1 non-finite")


def test_integer_weights_and_a_shape_mismatch_in_last_are_refused(tmp_path):
    state = small_state()
    state["head.1.bias"] = torch.zeros(9, dtype=torch.int64)
    refused(ck.load_checkpoint, save(tmp_path / "int.pth", state), "head.1.bias", "torch.int64")
    value = project_checkpoint(last={"epoch": 1, "state_dict": small_state(dataclasses.replace(SMALL, depth=1))})
    refused(ck.load_checkpoint, save(tmp_path / "mixed.pth", value), "depth 1 in the file, 2 in its model config")


def _set(values, index, number):
    array = np.asarray(values, dtype=np.float64)
    array[index] = number
    return array.tolist()


@pytest.mark.parametrize("name,change,fragments", [
    ("std", lambda v: _set(v, (1, 2, 0), 0.0), ("std", "not finite and positive", "view 1, joint 2, coordinate 0")),
    ("std", lambda v: _set(v, (0, 1, 1), float("nan")), ("std", "view 0, joint 1, coordinate 1", "nan")),
    ("std", lambda v: _set(v, (1, 0, 1), -2.0), ("std", "view 1, joint 0, coordinate 1", "-2.0")),
    ("std", lambda v: _set(v, (0, 0, 0), 1e-50), ("std", "view 0, joint 0, coordinate 0")),  # 0 as float32
    ("mean", lambda v: _set(v, (1, 1, 1), float("inf")), ("mean", "non-finite", "view 1, joint 1, coordinate 1")),
    ("mean", lambda v: _set(v, (0, 2, 1), 1e300), ("mean", "non-finite")),  # inf as float32
    ("std", lambda v: np.ones((4, 17, 2)).tolist(), ("std has shape (4, 17, 2)", "needs (2, 3, 2)")),
    ("mean", lambda v: [[1.0, 2.0], [3.0]], ("mean is not an array of numbers",)),
    ("mean", lambda v: "zero", ("mean is not an array of numbers",)),
    ("std", lambda v: {"a": 1}, ("std is not an array of numbers",)),
])
def test_a_bad_stored_normalisation_is_refused(tmp_path, name, change, fragments):
    value = project_checkpoint()
    value["normalization"][name] = change(value["normalization"][name])
    refused(ck.load_checkpoint, save(tmp_path / "run.pth", value), f"normalization {name}", *fragments)


def test_a_normalisation_that_is_no_dict_is_refused(tmp_path):
    refused(ck.load_checkpoint, save(tmp_path / "run.pth", project_checkpoint(normalization=[1, 2])),
            "normalization must be a dict of mean and std")


@pytest.mark.parametrize("field,value,fragment", [
    ("qkv_bias", "yes", "qkv_bias must be true or false"),
    ("mlp_ratio", float("nan"), "mlp_ratio"),
    ("mlp_ratio", 0.01, "mlp_ratio"),
    ("drop_path_rate", 1.5, "drop_path_rate must be a number in [0, 1)"),
    ("drop_rate", float("inf"), "drop_rate"),
    ("qk_scale", -1.0, "qk_scale must be None or a positive number"),
    ("num_heads", 3, "num_heads"),
    ("num_view", "4", "num_view"),
    ("colour", "red", "unknown keys"),
])
def test_bad_model_config_fields_are_one_line_errors(tmp_path, field, value, fragment):
    config = {**SMALL.to_dict(), field: value}
    refused(ck.load_checkpoint, save(tmp_path / "run.pth", project_checkpoint(model_config=config)), fragment)


def test_expected_shapes_are_the_models_and_cost_nothing():
    for config in (ModelConfig(), SMALL, TINY, dataclasses.replace(SMALL, qkv_bias=False, mlp_ratio=3.0)):
        model = IIVFormer(config)
        shapes = ck.expected_shapes(config)
        assert list(shapes) == [name for name, _ in model.named_parameters()] == list(model.state_dict())
        assert all(shapes[name] == tuple(p.shape) for name, p in model.named_parameters())
    weights._meta_shapes.cache_clear()
    before = torch.get_rng_state()
    ck.expected_shapes(ModelConfig())
    assert torch.equal(before, torch.get_rng_state())  # the meta model draws no random numbers


# ------------------------------------------------------------------ the training state of --resume
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, prepared data, checkpoint dict) of a 2-epoch run of the real training on a subset of
    the tiny synthetic data."""
    folder = tmp_path_factory.mktemp("trained")
    prepared = prepare.prepare(*synthetic.write_dataset(folder / "data", preset="tiny", seed=1, progress=False))
    prepared = dataclasses.replace(prepared, train=prepared.train.subset(np.arange(0, len(prepared.train), 40)),
                                   test=prepared.test.subset(np.arange(0, len(prepared.test), 40)))
    config = TrainConfig(batch_size=64, epochs=2, lr=0.002, seed=0, device="cpu", model=TINY, eval_batch_size=512)
    train.train(config, prepared, folder / "run.pth", folder / "run.log", progress=False)
    return config, prepared, torch.load(folder / "run.pth", weights_only=True)


def resume_from(tmp_path, trained, change=None, epochs=None):
    """ck.load_for_resume of the trained checkpoint after `change(checkpoint)`, saved to run.pth."""
    config, prepared, checkpoint = trained
    checkpoint = copy.deepcopy(checkpoint)
    if change is not None:
        change(checkpoint)
    path = save(tmp_path / "run.pth", checkpoint)
    config = dataclasses.replace(config, epochs=epochs) if epochs else config
    return path, lambda p: ck.load_for_resume(p, config, prepared.normalization)


def test_a_real_checkpoint_passes_and_its_state_is_usable(tmp_path, trained):
    path, load = resume_from(tmp_path, trained, epochs=3)
    saved = load(path)
    model = IIVFormer(TINY)
    model.load_state_dict(saved["last"]["state_dict"])
    optimizer = torch.optim.Adam(model.parameters(), lr=trained[0].lr)
    optimizer.load_state_dict(saved["last"]["optimizer"])
    ck.restore_rng_state(saved["last"]["rng"])
    assert [record["epoch"] for record in saved["history"]] == [1, 2]


def _delete(container, key):
    def change(checkpoint):
        del _at(checkpoint, container)[key]
    return change


def _put(container, key, value):
    def change(checkpoint):
        target = _at(checkpoint, container)
        target[key] = value(target[key]) if callable(value) else value
    return change


def _at(checkpoint, path):
    """The dict or list at `path` in `checkpoint` (TypeError where an edit put something else)."""
    for key in path:
        if not isinstance(checkpoint, (dict, list)):
            raise TypeError(f"{type(checkpoint).__name__} on the path")
        checkpoint = checkpoint[key]
    if not isinstance(checkpoint, (dict, list)):
        raise TypeError(f"{type(checkpoint).__name__} on the path")
    return checkpoint


def _scaled(tensor, index, number):
    tensor = tensor.clone()
    tensor.view(-1)[index] = number
    return tensor


STEP = ("last", "optimizer", "state", 0)
DAMAGE = [  # (change, the field the message names)
    (_put(("last",), "epoch", "2"), "last.epoch"),
    (_put(("last",), "epoch", 0), "last.epoch"),
    (_put(("last",), "epoch", True), "last.epoch"),
    (_put(("last",), "epoch", 2.0), "last.epoch"),
    (_delete(("last",), "epoch"), "last lacks epoch"),
    (_delete(("last",), "rng"), "last lacks rng"),
    (_put((), "last", [1, 2]), "last must be a dict"),
    (_put((), "history", "none"), "history must be a list of 2"),
    (_put((), "history", lambda h: h[:1]), "history must be a list of 2"),
    (_put((), "history", lambda h: h * 2), "history must be a list of 2"),
    (_put(("history",), 1, "epoch 2"), "history[1] must be a dict"),
    (_put(("history", 1), "epoch", 3), "history[1].epoch must be 2"),
    (_put(("history", 0), "epoch", "1"), "history[0].epoch must be 1"),
    (_put(("history", 0), "test_mpjpe", float("nan")), "history[0].test_mpjpe"),
    (_put(("history", 1), "train_mpjpe", -1.0), "history[1].train_mpjpe"),
    (_put(("history", 1), "train_mpjpe", "12"), "history[1].train_mpjpe"),
    (_put(("history", 0), "train_mpjpe", 10 ** 400), "history[0].train_mpjpe"),
    (_delete(("history", 1), "test_mpjpe"), "history[1].test_mpjpe"),
    (_put(("history", 1), "best_epoch", 7), "history[1].best_epoch"),
    (_put(("history", 0), "best_metric", 1.0), "history[0].best_metric"),
    (_put((), "best_epoch", 0), "best_epoch"),
    (_put((), "best_epoch", 3), "best_epoch"),
    (_put((), "best_epoch", "1"), "best_epoch"),
    (_delete((), "best_epoch"), "best_epoch"),
    (_put((), "best_metric", float("nan")), "best_metric"),
    (_put((), "best_metric", "low"), "best_metric"),
    (_put((), "best_metric", lambda m: m + 1), "best_metric"),
    (_delete((), "best_metric"), "best_metric"),
    (_put(("last", "rng"), "python", [3, [0] * 625]), "last.rng.python must be a list of 3"),
    (_put(("last", "rng", "python"), 0, 2), "last.rng.python[0]"),
    (_put(("last", "rng", "python"), 1, [1, 2]), "last.rng.python[1]"),
    (_put(("last", "rng", "python"), 1, lambda s: s[:-1] + [2 ** 32]), "last.rng.python[1]"),
    (_put(("last", "rng", "python"), 1, lambda s: s[:-1] + [625]), "last.rng.python[1]"),
    (_put(("last", "rng", "python"), 1, lambda s: [str(v) for v in s]), "last.rng.python[1]"),
    (_put(("last", "rng", "python"), 2, "x"), "last.rng.python[2]"),
    (_put(("last", "rng", "numpy"), 0, "PCG64"), "last.rng.numpy[0]"),
    (_put(("last", "rng", "numpy"), 1, lambda k: k[:-1]), "last.rng.numpy[1]"),
    (_put(("last", "rng", "numpy"), 1, lambda k: [-1] + k[1:]), "last.rng.numpy[1]"),
    (_put(("last", "rng", "numpy"), 2, 625), "last.rng.numpy[2]"),
    (_put(("last", "rng", "numpy"), 2, -1), "last.rng.numpy[2]"),
    (_put(("last", "rng", "numpy"), 3, 2), "last.rng.numpy[3]"),
    (_put(("last", "rng", "numpy"), 4, float("nan")), "last.rng.numpy[4]"),
    (_put(("last", "rng"), "numpy", None), "last.rng.numpy must be a list of 5"),
    (_put(("last", "rng"), "torch", lambda t: t.float()), "last.rng.torch"),
    (_put(("last", "rng"), "torch", lambda t: t[:100]), "last.rng.torch"),
    (_put(("last", "rng"), "torch", lambda t: torch.full_like(t, 255)), "last.rng.torch"),
    (_put(("last", "rng"), "cuda", "none"), "last.rng.cuda"),
    (_put(("last", "rng"), "cuda", [torch.zeros(5, dtype=torch.uint8)]), "last.rng.cuda[0]"),
    (_put(("last", "rng"), "cuda", [torch.full((16,), 1, dtype=torch.uint8)]), "last.rng.cuda[0]"),
    (_delete(("last", "rng"), "numpy"), "last.rng lacks numpy"),
    (_put(("last",), "rng", 5), "last.rng must be a dict"),
    (_put(("last",), "optimizer", []), "last.optimizer must be a dict"),
    (_delete(("last", "optimizer"), "state"), "last.optimizer must be a dict of state"),
    (_put(("last", "optimizer"), "param_groups", lambda g: g * 2), "last.optimizer.param_groups"),
    (_put(("last", "optimizer", "param_groups", 0), "params", lambda p: p[:-1]), "param_groups[0].params"),
    (_put(("last", "optimizer", "param_groups", 0), "params", lambda p: [torch.zeros(2)] * len(p)),
     "param_groups[0].params"),
    (_put(("last", "optimizer", "param_groups", 0), "lr", 0.5), "param_groups[0].lr"),
    (_put(("last", "optimizer", "param_groups", 0), "lr", float("nan")), "param_groups[0].lr"),
    (_put(("last", "optimizer", "param_groups", 0), "betas", (0.9, 2.0)), "param_groups[0].betas"),
    (_put(("last", "optimizer", "param_groups", 0), "betas", "0.9"), "param_groups[0].betas"),
    (_put(("last", "optimizer", "param_groups", 0), "eps", -1.0), "param_groups[0].eps"),
    (_delete(("last", "optimizer", "param_groups", 0), "lr"), "param_groups[0].lr"),
    (_put(("last", "optimizer"), "state", [1]), "last.optimizer.state must be a dict"),
    (_put(("last", "optimizer", "state"), 999, {}), "last.optimizer.state has the key 999"),
    (_put(("last", "optimizer", "state"), 0, "entry"), "last.optimizer.state[0] must be a dict"),
    (_delete(STEP, "exp_avg"), "last.optimizer.state[0] must be a dict"),
    (_put(STEP, "exp_avg", lambda t: t[..., :1]), "last.optimizer.state[0].exp_avg"),
    (_put(STEP, "exp_avg", lambda t: t.long()), "last.optimizer.state[0].exp_avg"),
    (_put(STEP, "exp_avg_sq", lambda t: _scaled(t, 0, float("nan"))), "last.optimizer.state[0].exp_avg_sq"),
    (_put(STEP, "exp_avg_sq", lambda t: _scaled(t, 0, -1.0)), "last.optimizer.state[0].exp_avg_sq"),
    (_put(STEP, "step", torch.tensor(0.0)), "last.optimizer.state[0].step"),
    (_put(STEP, "step", torch.tensor(float("nan"))), "last.optimizer.state[0].step"),
    (_put(STEP, "step", torch.tensor(1.5)), "last.optimizer.state[0].step"),
    (_put(STEP, "step", "many"), "last.optimizer.state[0].step"),
    (_put(("last", "state_dict"), "head.1.bias", lambda t: _scaled(t, 0, float("inf"))), "of last.state_dict"),
    (_put(("last", "state_dict"), "head.1.bias", lambda t: t[:5]), "head.1.bias"),
    (_put((), "train_config", "lr=0.002"), "train_config"),
    (_delete((), "normalization"), "normalization"),
]


@pytest.mark.parametrize("change,field", DAMAGE)
def test_each_damaged_field_of_the_training_state_is_named(tmp_path, trained, change, field):
    path, load = resume_from(tmp_path, trained, change, epochs=3)
    refused(load, path, field, error=IIVFormerError)


def test_resume_refuses_a_damaged_checkpoint_before_training(tmp_path, trained):
    config, prepared, _ = trained
    path, _ = resume_from(tmp_path, trained, _put(("last", "rng", "numpy"), 2, 700))
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"last\.rng\.numpy\[2\]"):
        train.train(dataclasses.replace(config, epochs=3), prepared, path, tmp_path / "run.log", resume=True,
                    progress=False)
    assert path.read_bytes() == before


def test_a_history_selected_on_val_needs_its_metric():
    best = {"best_epoch": 1, "best_metric": 7.0}
    history = [{"epoch": 1, "train_mpjpe": 9.0, "test_mpjpe": 8.0, "val_mpjpe": 7.0, **best},
               {"epoch": 2, "train_mpjpe": 6.0, "test_mpjpe": 5.0, "val_mpjpe": 7.5, **best}]
    assert resume.check_history(history, 2, "val") == (1, 7.0)
    del history[1]["val_mpjpe"]
    with pytest.raises(resume.Damaged, match=r"history\[1\]\.val_mpjpe"):
        resume.check_history(history, 2, "val")


def test_restore_rng_state_round_trip_and_refusal():
    random.gauss(0, 1), np.random.standard_normal()  # a cached second gaussian in both states
    state = ck.capture_rng_state()
    assert state["python"][2] is not None and state["numpy"][3] == 1
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    ck.restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws
    now = ck.capture_rng_state()
    damaged = copy.deepcopy(now)
    damaged["numpy"][2] = 625  # numpy itself would accept this position and read past its state
    with pytest.raises(CheckpointError, match=r"cannot restore the random-number state: last\.rng\.numpy\[2\]"):
        ck.restore_rng_state(damaged)
    assert torch.equal(torch.get_rng_state(), now["torch"]) and random.getstate()[1] == tuple(now["python"][1])


# ------------------------------------------------------------------ fuzzing
ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4), st.lists(st.integers(-3, 2 ** 33), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([torch.zeros(3), torch.zeros(0), torch.ones(2, dtype=torch.uint8), torch.zeros(1).expand(10 ** 6)]),
)
MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)] + ["extra"]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(MODEL_FIELDS), ANY | st.integers(0, 10 ** 12), min_size=1, max_size=3))
def test_fuzzed_model_configs_raise_only_checkpoint_errors(changes):
    with tempfile.TemporaryDirectory() as folder:
        path = save(Path(folder) / "run.pth", project_checkpoint(model_config={**SMALL.to_dict(), **changes}))
        try:
            loaded = ck.load_checkpoint(path)
        except CheckpointError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            return
        ck.build_model(loaded, source=str(path))  # what passed builds (or refuses with a CheckpointError)


FIELDS = [
    ("last", "epoch"), ("last", "rng"), ("last", "rng", "python"), ("last", "rng", "python", 0),
    ("last", "rng", "python", 1), ("last", "rng", "python", 1, 624), ("last", "rng", "python", 2),
    ("last", "rng", "numpy"), ("last", "rng", "numpy", 1, 0), ("last", "rng", "numpy", 2), ("last", "rng", "numpy", 3),
    ("last", "rng", "numpy", 4), ("last", "rng", "torch"), ("last", "rng", "cuda"), ("last", "optimizer"),
    ("last", "optimizer", "state"), ("last", "optimizer", "state", 0, "step"), ("last", "optimizer", "state", 3),
    ("last", "optimizer", "param_groups", 0, "lr"), ("last", "optimizer", "param_groups", 0, "params"),
    ("last", "optimizer", "param_groups", 0, "amsgrad"), ("last", "optimizer", "param_groups", 0, "foreach"),
    ("last", "state_dict"), ("history",), ("history", 0), ("history", 1, "epoch"), ("history", 0, "test_mpjpe"),
    ("history", 1, "best_metric"), ("best_epoch",), ("best_metric",), ("normalization",), ("normalization", "std"),
    ("normalization", "mean"), ("train_config",), ("train_config", "lr"), ("model_config", "depth"),
]
DELETE = object()


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), ANY | st.just(DELETE)), min_size=1, max_size=3))
def test_fuzzed_training_state_raises_only_iivformer_errors(tmp_path_factory, trained, edits):
    def change(checkpoint):
        for path, value in edits:
            try:
                parent = _at(checkpoint, path[:-1])
                if value is DELETE:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = value
            except (KeyError, IndexError, TypeError):  # an earlier edit removed or replaced the parent
                pass

    folder = tmp_path_factory.mktemp("fuzz")
    path, load = resume_from(folder, trained, change, epochs=3)
    try:
        saved = load(path)
    except IIVFormerError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        return
    model = IIVFormer(TINY)  # what passed is usable as train._start uses it
    model.load_state_dict(saved["last"]["state_dict"])
    optimizer = torch.optim.Adam(model.parameters(), lr=trained[0].lr)
    optimizer.load_state_dict(saved["last"]["optimizer"])
    ck.restore_rng_state(saved["last"]["rng"])
    assert math.isfinite(saved["best_metric"]) and 1 <= saved["best_epoch"] <= saved["last"]["epoch"]
