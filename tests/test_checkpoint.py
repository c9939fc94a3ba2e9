import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from published_recipe import recipe_state_dict

from iivformer import checkpoint as ck
from iivformer.prepare import Normalization
from iivformer.errors import CheckpointError, IIVFormerError
from iivformer.model import IIVFormer, ModelConfig

SMALL = ModelConfig(embed_dim_ratio=16, depth=2, num_heads=4)
SHAPE_FIELDS = ("num_view", "num_joints", "in_chans", "embed_dim_ratio", "depth", "mlp_ratio", "qkv_bias")


pytestmark = pytest.mark.usefixtures("one_thread")


def small_checkpoint(seed=0) -> dict:
    torch.manual_seed(seed)
    best, last = IIVFormer(SMALL), IIVFormer(SMALL)
    optimizer = torch.optim.Adam(last.parameters(), lr=1e-3)
    last(torch.randn(2, 4, 17, 2)).sum().backward()
    optimizer.step()
    norm = Normalization(np.full((4, 17, 2), 3.0, np.float32), np.full((4, 17, 2), 2.0, np.float32))
    return {"format": ck.FORMAT, "version": ck.VERSION, "model_config": SMALL.to_dict(),
            "best_state_dict": best.state_dict(), "best_epoch": 1, "best_metric": 55.5, "selected_on": "test",
            "last": {"epoch": 2, "state_dict": last.state_dict(), "optimizer": optimizer.state_dict(),
                     "rng": {"python": [3, [1, 2], None], "numpy": ["MT19937", [1, 2], 0, 0, 0.0],
                             "torch": torch.get_rng_state(), "cuda": []}},
            "normalization": norm.to_dict(), "history": [{"epoch": 1, "test_mpjpe": 55.5}],
            "train_config": {"lr": 1e-3}, "seed": 0, "versions": {"torch": str(torch.__version__)}}


def assert_one_line_error(info, path):
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_round_trip_and_build(tmp_path):
    checkpoint = small_checkpoint()
    path = tmp_path / "run.pth"
    ck.save_checkpoint(path, checkpoint)
    assert not [p for p in tmp_path.iterdir() if p.name != "run.pth"]  # no temporary left behind
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["normalization"] == checkpoint["normalization"]
    loaded = ck.load_checkpoint(path)
    assert loaded["best_epoch"] == 1 and loaded["last"]["epoch"] == 2
    x = torch.randn(3, 4, 17, 2)
    for which in ("best", "last"):
        model = ck.build_model(loaded, which=which).eval()
        assert model.config == SMALL
        expected = checkpoint["best_state_dict"] if which == "best" else checkpoint["last"]["state_dict"]
        for key, value in expected.items():
            assert torch.equal(model.state_dict()[key], value), key
        reference = IIVFormer(SMALL).eval()
        reference.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))
    optimizer = torch.optim.Adam(IIVFormer(SMALL).parameters())
    optimizer.load_state_dict(loaded["last"]["optimizer"])


def test_save_refuses_values_a_weights_only_load_cannot_read(tmp_path):
    checkpoint = small_checkpoint()
    checkpoint["best_metric"] = np.float32(1.0)
    with pytest.raises(TypeError, match="best_metric"):
        ck.save_checkpoint(tmp_path / "run.pth", checkpoint)
    assert not (tmp_path / "run.pth").exists()


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "run.pth"
    ck.save_checkpoint(path, small_checkpoint(seed=0))
    before = path.read_bytes()

    def half_save(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(IIVFormerError, match="cannot write .*run.pth: disk full; the previous file, if any, is unchanged"):
        ck.save_checkpoint(path, small_checkpoint(seed=1))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ck.load_checkpoint(path)["last"]["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run.pth"]


def test_published_plain_state_dict_loads_with_the_published_config(tmp_path):
    path = tmp_path / "cpn.pth"
    torch.save(recipe_state_dict(3), path)
    loaded = ck.load_checkpoint(path)
    assert loaded["format"] == "state_dict"
    assert ModelConfig.from_dict(loaded["model_config"]) == ModelConfig()
    model = ck.build_model(loaded)
    assert model.config == ModelConfig()
    with pytest.raises(CheckpointError, match="no 'last'"):
        ck.build_model(loaded, which="last")


def test_data_parallel_prefix_is_removed(tmp_path):
    state = IIVFormer(SMALL).state_dict()
    path = tmp_path / "dp.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in state.items()), path)
    loaded = ck.load_checkpoint(path)
    assert list(loaded["best_state_dict"]) == list(state)


@pytest.mark.parametrize("config", [
    SMALL,
    ModelConfig(num_view=3, num_joints=13, embed_dim_ratio=12, depth=3, num_heads=4, mlp_ratio=4.0, qkv_bias=False),
    ModelConfig(num_view=2, in_chans=3, embed_dim_ratio=8, depth=1, num_heads=2, mlp_ratio=1.0),
])
def test_smaller_state_dict_infers_its_config(config):
    inferred = ck.infer_model_config(IIVFormer(config).state_dict())
    for name in SHAPE_FIELDS:
        assert getattr(inferred, name) == getattr(config, name), name
    assert inferred.embed_dim_ratio % inferred.num_heads == 0


def test_size_mismatch_names_the_sizes(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(IIVFormer(SMALL).state_dict(), path)
    loaded = ck.load_checkpoint(path)
    with pytest.raises(CheckpointError) as info:
        ck.build_model(loaded, config=ModelConfig(), source=str(path))
    message = assert_one_line_error(info, path)
    assert "embed_dim_ratio 16 in the file, 32 requested" in message
    assert "depth 2 in the file, 4 requested" in message
    # a checkpoint whose stored config does not fit its own weights
    checkpoint = small_checkpoint()
    checkpoint["model_config"] = {**SMALL.to_dict(), "num_view": 3}
    with pytest.raises(CheckpointError, match="num_view 4 in the file, 3 in its model config"):
        ck.build_model(checkpoint)


def test_other_architectures_are_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        ck.load_checkpoint(path)
    message = assert_one_line_error(info, path)
    assert "is not an IIVFormer state dict (unexpected keys: 0.bias, 0.weight, 2.bias, 2.weight)" in message

    state = IIVFormer(SMALL).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["head.1.bias"]
    with pytest.raises(CheckpointError, match=r"unexpected keys: extra\.weight; missing keys: head\.1\.bias"):
        ck.infer_model_config(state)


def _write(path, content):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("make,expected", [
    (lambda d: d / "missing.pth", "file not found"),
    (lambda d: d, "is a folder"),
    (lambda d: _write(d / "empty.pth", b""), "file is empty"),
    (lambda d: _write(d / "garbage.pth", bytes(range(7, 250)) * 10), "not a PyTorch checkpoint"),
    (lambda d: _write(d / "pickle.pth", b"\x80\x02garbage that is no pickle"), "damaged"),
])
def test_unreadable_files_are_one_line_errors(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=expected) as info:
        ck.load_checkpoint(path)
    assert_one_line_error(info, path)


def test_truncated_and_damaged_checkpoints(tmp_path):
    good = tmp_path / "good.pth"
    ck.save_checkpoint(good, small_checkpoint())
    content = good.read_bytes()
    half = _write(tmp_path / "half.pth", content[: len(content) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        ck.load_checkpoint(half)
    assert_one_line_error(info, half)
    damaged = bytearray(content)
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(64)
    damaged_path = _write(tmp_path / "damaged.pth", bytes(damaged))
    with pytest.raises(CheckpointError, match="damaged") as info:
        ck.load_checkpoint(damaged_path)
    assert_one_line_error(info, damaged_path)


@pytest.mark.parametrize("value,expected", [
    ([1, 2, 3], "found a list"),
    ({"epoch": 3, "notes": "hello"}, "found a dict without tensors"),
    ({"format": ck.FORMAT, "version": 99}, "version 99"),
    ({"format": ck.FORMAT, "version": 1, "model_config": SMALL.to_dict()}, "lacks best_state_dict"),
])
def test_files_that_are_neither_checkpoint_nor_state_dict(tmp_path, value, expected):
    path = tmp_path / "odd.pth"
    torch.save(value, path)
    with pytest.raises(CheckpointError, match=expected) as info:
        ck.load_checkpoint(path)
    assert_one_line_error(info, path)


class RunsCode:
    """Unpickling this calls os.system: a weights-only load must refuse it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("writer", ["pickle", "torch", "torch-legacy"])
def test_pickles_that_would_run_code_are_refused(tmp_path, writer):
    marker = tmp_path / "code-ran"
    payload = {"best_state_dict": RunsCode(marker)}
    path = tmp_path / "evil.pth"
    if writer == "pickle":
        with open(path, "wb") as stream:
            pickle.dump(payload, stream)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch")
    with pytest.raises(CheckpointError, match="refused: the file contains objects that would run code") as info:
        ck.load_checkpoint(path)
    assert_one_line_error(info, path)
    assert not marker.exists()


def test_export_state_dict_loads_strictly_with_weights_only(tmp_path):
    source, out = tmp_path / "run.pth", tmp_path / "export.pth"
    checkpoint = small_checkpoint()
    ck.save_checkpoint(source, checkpoint)
    assert ck.export_state_dict(source, out) == out
    state = torch.load(out, weights_only=True)
    assert list(state) == list(checkpoint["best_state_dict"])
    model = IIVFormer(SMALL)
    model.load_state_dict(state, strict=True)
    for key, value in checkpoint["best_state_dict"].items():
        assert torch.equal(state[key], value)
    # the export is itself a plain state dict this module reads back
    assert ck.load_checkpoint(out)["format"] == "state_dict"
