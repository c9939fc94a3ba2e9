"""Evaluation: parity with the published evaluate.py, the command line and the Python API."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iivformer import evaluate, skeleton
from published_recipe import recipe_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "eval_fixture"
DATA = [str(FIXTURE / "data_3d_h36m.npz"), str(FIXTURE / "data_2d_h36m_fixture.npz")]
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
    assert set(written) == {"p1", "p2"}
    for protocol in ("p1", "p2"):
        assert written[protocol]["mean"] == pytest.approx(EXPECTED[protocol]["mean"], abs=0.05)
    assert "WalkTogether" in completed.stdout and "P2 (mm)" in completed.stdout


def test_evaluation_traces_every_sample(published_weights):
    result = evaluate.evaluate_checkpoint(published_weights, *DATA, subjects=["S11"])
    assert set(result.subjects.tolist()) == {"S11"}
    assert set(result.keys.tolist()) == EXPECTED_S11_KEYS
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


def test_format_table_lists_actions_and_the_mean():
    results = {"p1": {"Walking": 10.0, "Sitting": 20.0, "mean": 15.0}, "p2": {"Walking": 5.0, "Sitting": 7.0, "mean": 6.0}}
    lines = evaluate.format_table(results).splitlines()
    assert lines[0].split() == ["action", "P1", "(mm)", "P2", "(mm)"]
    assert lines[-1].split() == ["mean", "15.00", "6.00"]


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
