"""Evaluation: parity with the published evaluate.py, the command line and the Python API."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iivformer import evaluate, provenance, skeleton
from iivformer.errors import DataError, IIVFormerError
from published_recipe import recipe_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "eval_fixture"
DATA = [str(FIXTURE / "data_3d_h36m.npz"), str(FIXTURE / "data_2d_h36m_fixture.npz")]
PUBLISHED_SHA256 = "bca9b8c6dc0a998af05c03ab67d6e391bab369c6694c70f917c9ebabb2209d60"  # cpn.pth, shared/reference
EXPECTED = json.loads((FIXTURE / "expected_evaluation.json").read_text())
EXPECTED_S11_KEYS = {f"{action}{take}" for action in skeleton.ACTIONS for take in ("", " 1")} - {"Directions"}


@pytest.fixture(scope="module")
def published_weights(tmp_path_factory):
    """A plain state dict, as the published code saves cpn.pth, with the recipe weights."""
    path = tmp_path_factory.mktemp("weights") / "recipe.pth"
    torch.save(recipe_state_dict(EXPECTED["weight_seed"]), path)
    return path


def test_per_action_results_match_the_published_evaluation(published_weights):
    result = evaluate.evaluate_checkpoint(published_weights, *DATA, subjects=EXPECTED["subjects"])
    for protocol in ("p1", "p2"):
        ours = result.per_action(protocol)
        assert list(ours) == list(skeleton.ACTIONS) + ["mean"]
        for action, millimetres in EXPECTED[protocol].items():
            assert ours[action] == pytest.approx(millimetres, abs=0.05), (protocol, action)


def test_command_line_with_the_published_flags(published_weights, tmp_path):
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "iivformer", "evaluate", "--data_3d", DATA[0], "--data_2d", DATA[1],
         "--subjects", "['S9', 'S11']", "--model_path", str(published_weights), "--protocol", "both",
         "--seed", "42", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    written = json.loads(out.read_text())
    assert set(written) == {"p1", "p2", "provenance"}
    for protocol in ("p1", "p2"):
        assert written[protocol]["mean"] == pytest.approx(EXPECTED[protocol]["mean"], abs=0.05)
    assert "WalkTogether" in completed.stdout and "P2 (mm)" in completed.stdout
    record = written["provenance"]
    assert record["checkpoint"]["sha256"] == hashlib.sha256(published_weights.read_bytes()).hexdigest()
    assert record["data_3d"]["sha256"] == hashlib.sha256(Path(DATA[0]).read_bytes()).hexdigest()
    assert record["data_2d"]["sha256"] == hashlib.sha256(Path(DATA[1]).read_bytes()).hexdigest()
    assert record["subjects"] == ["S9", "S11"] and record["frames"] == int(np.load(FIXTURE / "expected_preparation.npz")["test_frames"])
    assert record["checkpoint"]["published"] is None  # the recipe weights are not the published cpn.pth
    assert "recomputed from the training subjects" in record["normalization"]
    assert record["versions"]["torch"] == torch.__version__ and record["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")


def test_evaluation_traces_every_sample(published_weights):
    result = evaluate.evaluate_checkpoint(published_weights, *DATA, subjects=["S11"])
    assert set(result.subjects.tolist()) == {"S11"}
    assert set(result.recordings.tolist()) == EXPECTED_S11_KEYS
    per_frame = result.per_frame("p1")
    np.testing.assert_allclose(per_frame, np.linalg.norm(result.predictions - result.targets, axis=-1).mean(1),
                               rtol=1e-5)
    worst = result.worst_frames("Walking", count=3)
    assert all(result.actions[worst] == "Walking") and np.all(np.diff(per_frame[worst]) <= 0)
    assert per_frame[worst[0]] == per_frame[result.actions == "Walking"].max()
    assert result.per_action("p2")["mean"] < result.per_action("p1")["mean"]


@pytest.mark.parametrize("text, subjects", [('["S9", "S11"]', ["S9", "S11"]), ("['S9']", ["S9"]), ("S9,S11", ["S9", "S11"])])
def test_subject_lists_are_read_without_eval(text, subjects):
    assert evaluate.parse_subjects(text) == subjects


@pytest.mark.parametrize("subjects, message", [
    ('["S99"]', "subject S99 is missing"),
    ('["S1"]', "training and test subjects overlap: S1"),
])
def test_unknown_or_training_subjects_are_refused(published_weights, subjects, message):
    completed = subprocess.run(
        [sys.executable, "-m", "iivformer", "evaluate", "--data_3d", DATA[0], "--data_2d", DATA[1],
         "--subjects", subjects, "--model_path", str(published_weights)], capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert completed.stderr.count("\n") == 1 and message in completed.stderr


def test_saved_evaluation_reloads_every_sample_and_table(published_weights, tmp_path):
    result = evaluate.evaluate_checkpoint(published_weights, *DATA, subjects=["S9", "S11"])
    result.save(tmp_path / "evaluation.npz")
    again = evaluate.Evaluation.load(tmp_path / "evaluation.npz")
    for name in ("predictions", "targets", "subjects", "recordings", "actions", "frame_index"):
        np.testing.assert_array_equal(getattr(again, name), getattr(result, name))
    for protocol in ("p1", "p2"):
        np.testing.assert_array_equal(again.errors[protocol], result.errors[protocol])
        assert again.per_action(protocol) == result.per_action(protocol)
    assert again.provenance == json.loads(json.dumps(result.provenance))
    stored = json.loads(str(np.load(tmp_path / "evaluation.npz")["summary"]))
    assert stored["p1"] == result.per_action("p1") and set(stored["per_joint"]["p2"]) == set(skeleton.JOINT_NAMES)
    errors = np.linalg.norm(result.predictions - result.targets, axis=-1)
    assert stored["metrics"]["pck_150mm"] == pytest.approx(100 * np.mean(errors < 150))


def test_a_file_that_is_not_a_saved_evaluation_is_refused_in_one_line(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, predictions=np.zeros((2, 17, 3)))
    with pytest.raises(DataError, match="not a saved evaluation") as error:
        evaluate.Evaluation.load(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_the_published_checkpoint_is_recognised_by_its_sha256(tmp_path, monkeypatch):
    weights = tmp_path / "cpn.pth"
    weights.write_bytes(b"stand-in")
    digest = hashlib.sha256(b"stand-in").hexdigest()
    monkeypatch.setitem(provenance.PUBLISHED_CHECKPOINTS, digest, provenance.PUBLISHED_CHECKPOINTS[PUBLISHED_SHA256])
    record = provenance.describe("IIVFormer", weights, *DATA, ["S9"], 10, None, "stored")
    assert record["checkpoint"]["published"] == {"name": "cpn.pth", "p1": 30.9, "p2": 24.0,
                                                 "reported": provenance.PUBLISHED_CHECKPOINTS[PUBLISHED_SHA256]["reported"]}
    assert "cpn.pth" in provenance.caption(record) and "\n" not in provenance.caption(record)


def test_source_date_epoch_fixes_the_date(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert provenance.now() == "1970-01-01T00:00:00Z"


def test_an_empty_selection_is_refused():
    empty = evaluate.Evaluation(*(np.zeros((0, 17, 3)),) * 2, {"p1": np.zeros((0, 17))}, *(np.array([]),) * 4)
    with pytest.raises(IIVFormerError, match="holds no frames"):
        empty.per_action("p1")


def test_per_action_means_stay_exact_with_thousands_of_actions():
    rng = np.random.default_rng(0)
    count = 20_000
    actions = np.array([f"Action{index % 3000}" for index in range(count)])
    errors = rng.uniform(0, 100, (count, 17)).astype(np.float32)
    evaluation = evaluate.Evaluation(np.zeros((count, 17, 3)), np.zeros((count, 17, 3)), {"p1": errors},
                                     actions, actions, actions, np.arange(count))
    table = evaluation.per_action("p1")
    per_frame = errors.mean(axis=1, dtype=np.float64)
    for action in ("Action0", "Action2999"):
        assert table[action] == pytest.approx(per_frame[actions == action].mean(), rel=1e-12)
    assert len(table) == 3001


def test_a_saved_evaluation_with_a_damaged_summary_is_refused_in_one_line(tmp_path):
    path = tmp_path / "evaluation.npz"
    arrays = {name: np.zeros((1, 17, 3), np.float32) for name in ("predictions", "targets")}
    arrays.update({name: np.array(["S9"]) for name in ("subjects", "recordings", "actions")},
                  frame_index=np.zeros(1, np.int32), errors_p1=np.zeros((1, 17), np.float32),
                  errors_p2=np.zeros((1, 17), np.float32), summary=np.array("[" * 100_000))
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="damaged evaluation") as error:
        evaluate.Evaluation.load(path)
    assert "\n" not in str(error.value)


def test_bf16_evaluation_runs_in_bfloat16_and_stays_close_to_fp32():
    import torch
    from iivformer.evaluate import evaluate_split
    from iivformer.model import IIVFormer
    from iivformer.prepare import Split

    torch.manual_seed(0)
    model = IIVFormer(embed_dim_ratio=8, depth=1, num_heads=2)
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((64, 4, 17, 2)).astype(np.float32)
    targets = rng.standard_normal((64, 1, 17, 3)).astype(np.float32) * 200
    split = Split(inputs, targets, [("S9", "Walking 1")], np.zeros(64, np.int32), np.arange(64, dtype=np.int32))
    full = evaluate_split(model, split, "cpu")
    half = evaluate_split(model, split, "cpu", precision="bf16")
    assert not np.array_equal(full.predictions, half.predictions)  # bf16 really ran
    scale = np.abs(full.predictions).max()
    assert np.abs(full.predictions - half.predictions).max() < 0.02 * scale  # bfloat16 keeps ~3 digits
