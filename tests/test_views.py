"""Camera subsets: training on chosen views, view dropout, and evaluating a checkpoint on the views
it can take (and refusing the others in one line)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from iivformer import config, evaluate, prepare, synthetic
from iivformer.checkpoint import load_checkpoint
from iivformer.errors import IIVFormerError

SMALL = ["--embed_dim_ratio", "8", "--depth", "1", "--num_heads", "2", "--epochs", "1", "--batch_size", "256",
         "--device", "cpu"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "iivformer", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return synthetic.write_dataset(tmp_path_factory.mktemp("tiny"), preset="tiny", seed=2, progress=False)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """Checkpoints trained on views 0,1,3 without dropout and on all views with dropout 0.25."""
    folder = tmp_path_factory.mktemp("trained")
    paths = {}
    for name, flags in (("subset", ["--views", "0,1,3"]), ("dropout", ["--view_dropout", "0.25"])):
        paths[name] = folder / f"{name}.pth"
        completed = run("train", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", paths[name],
                        "--log", folder / f"{name}.log", *SMALL, *flags)
        assert completed.returncode == 0, completed.stderr
    return paths


def test_the_views_choose_the_cameras_and_their_statistics(tiny):
    everything, chosen = prepare.prepare(*tiny), prepare.prepare(*tiny, views=[3, 0])
    assert chosen.train.inputs.shape[1:] == (2, 17, 2) and chosen.views == (3, 0)
    np.testing.assert_array_equal(chosen.normalization.mean, everything.normalization.mean[[3, 0]])
    np.testing.assert_allclose(chosen.test.inputs, everything.test.inputs[:, [3, 0]], rtol=1e-6, atol=1e-6)


def test_a_model_trained_on_three_views_records_them_and_takes_only_them(trained, tiny):
    checkpoint = load_checkpoint(trained["subset"])
    assert checkpoint["views"] == [0, 1, 3] and checkpoint["model_config"]["num_view"] == 3
    result = evaluate.evaluate_checkpoint(trained["subset"], *tiny, device="cpu")
    assert result.provenance["views"] == [0, 1, 3] and result.provenance["cameras"][2] == "60457274"
    for views, fragment in (("0,1", "without view dropout"), ("0,1,2,3", "views [2] are not among")):
        completed = run("evaluate", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", trained["subset"],
                        "--views", views)
        assert completed.returncode == 1 and completed.stderr.count("\n") == 1 and fragment in completed.stderr


def test_a_model_trained_with_view_dropout_evaluates_on_any_subset(trained, tiny, tmp_path):
    assert load_checkpoint(trained["dropout"])["train_config"]["view_dropout"] == 0.25
    out = tmp_path / "two_views.json"
    completed = run("evaluate", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", trained["dropout"],
                    "--views", "1,2", "--protocol", "both", "--json", out)
    assert completed.returncode == 0, completed.stderr
    written = json.loads(out.read_text())
    assert written["provenance"]["views"] == [1, 2] and np.isfinite(written["p1"]["mean"])
    everything = evaluate.evaluate_checkpoint(trained["dropout"], *tiny, device="cpu")
    assert everything.per_action("p1")["mean"] != written["p1"]["mean"]  # the other views were left out


def test_view_settings_that_cannot_train_are_refused():
    with pytest.raises(IIVFormerError, match=r"view_dropout must be a probability in \[0, 1\)"):
        config.training_config(view_dropout=1.0)
    with pytest.raises(IIVFormerError, match="are 2 cameras but the model takes 4 views"):
        config.training_config(views=[0, 1], num_view=4)
    assert config.training_config(views=[2, 0]).model.num_view == 2


def test_every_subset_of_views_at_once(trained, tiny, tmp_path):
    out = tmp_path / "subsets.json"
    completed = run("evaluate", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", trained["dropout"],
                    "--view_subsets", "all", "--device", "cpu", "--json", out)
    assert completed.returncode == 0, completed.stderr
    subsets = json.loads(out.read_text())["subsets"]
    assert len(subsets) == 15 and list(subsets)[:2] == ["0", "1"] and list(subsets)[-1] == "0,1,2,3"
    assert all("model" in entry for entry in subsets.values())
    assert sum("triangulation" in entry for entry in subsets.values()) == 11  # the subsets of 2 or more
    all_views = evaluate.evaluate_checkpoint(trained["dropout"], *tiny, device="cpu")
    assert subsets["0,1,2,3"]["model"]["p1"] == pytest.approx(all_views.per_action("p1")["mean"], abs=1e-6)
    assert "adding a view made P1 worse in" in completed.stdout and "| 0,2 |" in completed.stdout
    refused = run("evaluate", "--data_3d", tiny[0], "--data_2d", tiny[1], "--model_path", trained["subset"],
                  "--view_subsets", "all")
    assert refused.returncode == 1 and "needs a model trained with --view_dropout" in refused.stderr


def _action_mean(evaluation, rows) -> float:
    """The P1 table's mean over actions of `evaluation` restricted to the frames `rows`."""
    per_frame, actions = evaluation.errors["p1"][rows].mean(axis=1), evaluation.actions[rows]
    return float(np.mean([per_frame[actions == action].mean() for action in np.unique(actions)]))


def test_every_subset_on_one_frame_in_n(trained, tiny):
    from iivformer import provenance, subsets
    from iivformer.baselines import evaluate_method

    result = subsets.evaluate_subsets(trained["dropout"], *tiny, device="cpu", every=3)
    model = evaluate.evaluate_checkpoint(trained["dropout"], *tiny, device="cpu")
    rows = np.arange(0, len(model), 3)
    record = result["provenance"]
    assert record["frames"] == len(rows) < len(model) and record["every"] == 3
    assert "one frame in 3" in provenance.caption(record) and "one in 3" in record["protocol"]["frames"]
    assert len(result["subsets"]) == 15
    everything = result["subsets"]["0,1,2,3"]
    assert everything["model"]["p1"] == pytest.approx(_action_mean(model, rows), abs=1e-4)
    triangulated = evaluate_method("triangulation", *tiny)
    assert everything["triangulation"]["p1"] == pytest.approx(_action_mean(triangulated, rows), abs=1e-4)
    with pytest.raises(IIVFormerError, match="every must be a positive integer, not 0"):
        subsets.evaluate_subsets(trained["dropout"], *tiny, every=0)


def test_adding_a_view_is_counted_against_the_smaller_subset():
    from iivformer.subsets import added_view_hurts

    subsets = {"0": {"model": {"p1": 50.0}}, "1": {"model": {"p1": 40.0}}, "0,1": {"model": {"p1": 45.0}}}
    assert added_view_hurts(subsets) == (1, 2)  # 40 -> 45 is worse, 50 -> 45 is better
