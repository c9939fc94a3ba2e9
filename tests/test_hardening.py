"""End to end through the command line: determinism, no partial outputs, hostile checkpoints."""
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import archive_factory as factory
from iivformer import synthetic
from iivformer.checkpoint import load_checkpoint
from iivformer.errors import CheckpointError
from iivformer.model import IIVFormer

SMALL_MODEL = ["--embed_dim_ratio", "8", "--depth", "1", "--num_heads", "2"]


def run(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "iivformer", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return synthetic.write_dataset(tmp_path_factory.mktemp("tiny"), preset="tiny", seed=1, progress=False)


@pytest.fixture(scope="module")
def two_runs(tiny, tmp_path_factory):
    """The same training and evaluation command lines, run twice in separate folders."""
    folders = []
    for _ in range(2):
        folder = tmp_path_factory.mktemp("run")
        trained = run("train", "--data_3d", tiny[0], "--data_2d", tiny[1], "--epochs", 2, "--batch_size", 512,
                      "--seed", 7, "--device", "cpu", "--model_path", folder / "model.pth", "--log", folder / "model.log",
                      *SMALL_MODEL)
        assert trained.returncode == 0, trained.stderr
        evaluated = run("evaluate", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", folder / "model.pth",
                        "--protocol", "both", "--device", "cpu", "--json", folder / "results.json",
                        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})  # the provenance's date, fixed
        assert evaluated.returncode == 0, evaluated.stderr
        folders.append(folder)
    return folders


def test_same_seed_gives_identical_checkpoints_and_results(two_runs):
    first, second = (folder / "model.pth" for folder in two_runs)
    assert first.read_bytes() == second.read_bytes()
    assert len(load_checkpoint(first)["history"]) == 2
    assert (two_runs[0] / "results.json").read_bytes() == (two_runs[1] / "results.json").read_bytes()


def test_export_gives_a_state_dict_the_published_code_loads(two_runs, tmp_path):
    out = tmp_path / "plain.pth"
    assert run("export", "--model_path", two_runs[0] / "model.pth", "--out", out).returncode == 0
    state_dict = torch.load(out, weights_only=True)
    model = IIVFormer(embed_dim_ratio=8, depth=1, num_heads=2)
    model.load_state_dict(state_dict, strict=True)


def test_evaluating_with_a_model_of_another_size_names_the_sizes(two_runs, tiny, tmp_path):
    plain = tmp_path / "plain.pth"
    state_dict = load_checkpoint(two_runs[0] / "model.pth")["best_state_dict"]
    state_dict["Intra_pos_embed"] = torch.zeros(1, 17, 16)  # width 16 where the rest is 8
    torch.save(state_dict, plain)
    completed = run("evaluate", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", plain)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and str(plain) in completed.stderr


def test_bad_data_leaves_no_outputs_behind(tmp_path):
    positions_3d, positions_2d = factory.positions()
    positions_2d["S1"]["Walking"][0][3, 4, 0] = float("nan")
    path_3d, path_2d = factory.write(tmp_path, positions_3d, positions_2d)
    trained = run("train", "--data_3d", path_3d, "--data_2d", path_2d, "--model_path", tmp_path / "m.pth",
                  "--log", tmp_path / "m.log", *SMALL_MODEL)
    assert trained.returncode != 0 and "non-finite" in trained.stderr and "Traceback" not in trained.stderr
    evaluated = run("evaluate", "--data_3d", path_3d, "--data_2d", path_2d, "--model_path", tmp_path / "m.pth",
                    "--json", tmp_path / "r.json")
    assert evaluated.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_2d_h36m_test.npz", "data_3d_h36m.npz"]


def test_init_from_fine_tunes_a_trained_model_from_the_command_line(two_runs, tiny, tmp_path):
    source = two_runs[0] / "model.pth"
    common = ["--data_3d", tiny[0], "--data_2d", tiny[1], "--epochs", 1, "--batch_size", 512, "--seed", 7,
              "--device", "cpu", "--lr", "1e-12", *SMALL_MODEL]
    tuned = run("train", *common, "--init_from", source, "--view_dropout", "0.25", "--model_path",
                tmp_path / "tuned.pth", "--log", tmp_path / "tuned.log")
    assert tuned.returncode == 0, tuned.stderr
    saved, started = load_checkpoint(tmp_path / "tuned.pth"), load_checkpoint(source)
    assert saved["train_config"]["init_from"] == str(source) and saved["train_config"]["view_dropout"] == 0.25
    assert saved["history"][0]["test_mpjpe"] == pytest.approx(started["best_metric"], abs=1e-3)  # lr 1e-12: unmoved
    other = run("train", *common[:-6], "--embed_dim_ratio", "16", "--depth", "1", "--num_heads", "2",
                "--init_from", source, "--model_path", tmp_path / "other.pth", "--log", tmp_path / "other.log")
    assert other.returncode != 0 and "Traceback" not in other.stderr
    assert other.stderr.strip() == f"error: cannot start from {source}: embed_dim_ratio 8 there, 16 in this run"
    assert not (tmp_path / "other.pth").exists()


def test_output_folder_is_checked_before_training(tiny, tmp_path):
    completed = run("train", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", tmp_path / "no" / "m.pth")
    assert completed.returncode != 0 and "does not exist" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def checkpoint_bytes(two_runs):
    return (two_runs[0] / "model.pth").read_bytes()


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.floats(0, 1)))
def test_mutated_checkpoints_raise_only_checkpoint_errors(tmp_path, checkpoint_bytes, edits, cut):
    content = bytearray(checkpoint_bytes)
    for position, value in edits:
        content[int(position * len(content))] = value
    if cut is not None:
        content = content[: int(cut * len(content))]
    path = tmp_path / "mutated.pth"
    path.write_bytes(bytes(content))
    try:
        load_checkpoint(path)
    except CheckpointError as error:
        assert str(path) in str(error) and "\n" not in str(error)
