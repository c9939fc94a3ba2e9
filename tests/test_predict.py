"""`iivformer predict`: the user's own 2D keypoints (Human3.6M or COCO order) in, 3D poses out, the
same as evaluation's for the same frames; missing joints, cameras and bad files refused in one line."""
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from iivformer import cli, config, evaluate, prepare, synthetic
from iivformer.archives import load_archives
from iivformer.cameras import camera_ids
from iivformer.errors import CheckpointError, DataError, IIVFormerError
from iivformer.keypoints import COCO17_NAMES, coco_to_h36m, keypoints_from_arrays, read_keypoints
from iivformer.predict import Prediction, locate_root, output_paths, predict_keypoints
from iivformer.rig import h36m_rig, rig_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")
IDS = camera_ids()  # Human3.6M's, in the archives' order
RECORDING = "Walking 1"
COCO = {name: index for index, name in enumerate(COCO17_NAMES)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny set without detector noise, a 1-epoch ci model trained with view dropout on S1, and
    the same checkpoint marked as trained without view dropout."""
    folder = tmp_path_factory.mktemp("predict")
    paths = synthetic.write_dataset(folder, preset="tiny", seed=3, detector_noise=0.0, progress=False)
    settings = config.training_config("ci", device="cpu", epochs=1, view_dropout=0.3)
    from iivformer import train
    train.train(settings, prepare.prepare(*paths, train_subjects=("S1",), test_subjects=("S9",)),
                folder / "dropout.pth", folder / "dropout.log", progress=False)
    checkpoint = torch.load(folder / "dropout.pth", weights_only=True)
    checkpoint["train_config"]["view_dropout"] = 0.0
    torch.save(checkpoint, folder / "plain.pth")
    archives = load_archives(*paths, ["S9"])
    return {"paths": paths, "dropout": folder / "dropout.pth", "plain": folder / "plain.pth",
            "points": archives.positions_2d["S9"][RECORDING].copy(),
            "positions": archives.positions_3d["S9"][RECORDING].astype(np.float64) * 1000.0,
            "root": archives.positions_3d["S9"][RECORDING][:, 0].astype(np.float64) * 1000.0}


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text and text
    return text


def run_cli(capsys, *args):
    code = cli.main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------ parity with evaluate

def test_predict_gives_evaluates_predictions_for_a_test_recording(setup, tmp_path, capsys):
    evaluation = evaluate.evaluate_checkpoint(setup["dropout"], *setup["paths"], subjects=["S9"], device="cpu")
    rows = evaluation.recordings == RECORDING
    expected = evaluation.predictions[rows][np.argsort(evaluation.frame_index[rows])]
    keypoints = write_npz(tmp_path / "walking.npz", keypoints=setup["points"], camera_ids=np.array(IDS))
    code, out, err = run_cli(capsys, "--model_path", setup["dropout"], "--keypoints", keypoints,
                             "--out", tmp_path / "result.npz", "--device", "cpu")
    assert code == 0, err
    assert "result.npz" in out and "result.json" in out
    saved = Prediction.load(tmp_path / "result.npz")
    assert saved.poses.shape == (len(setup["points"]), 17, 3) and saved.camera_ids == IDS
    np.testing.assert_allclose(saved.poses, expected, rtol=0, atol=1e-3)
    assert saved.views_used.all() and saved.root is None

    from_json = Prediction.load(tmp_path / "result.json")  # the same numbers in both files
    np.testing.assert_array_equal(from_json.poses, saved.poses)
    np.testing.assert_array_equal(from_json.views_used, saved.views_used)
    assert from_json.provenance == saved.provenance and saved.provenance["keypoints"]["name"] == "walking.npz"
    assert json.loads((tmp_path / "result.json").read_text())["joints"][9] == "Nose"

    as_json = tmp_path / "walking.json"  # the keypoints as JSON, with a confidence channel, give the same
    with_scores = np.concatenate([setup["points"], np.ones(setup["points"].shape[:3] + (1,))], axis=-1)
    as_json.write_text(json.dumps({"keypoints": with_scores.tolist(), "camera_ids": IDS}))
    again = predict_keypoints(setup["dropout"], as_json, device="cpu")
    np.testing.assert_allclose(again.poses, expected, rtol=0, atol=1e-3)


def test_the_root_triangulated_with_the_rig_is_the_true_root(setup):
    result = predict_keypoints(setup["dropout"], setup["points"], rig="h36m:S9", device="cpu", camera_ids=IDS)
    assert np.abs(result.root - setup["root"]).max() < 1.0 and (result.root_views == 4).all()
    assert result.provenance["rig"]["name"] == "h36m:S9"
    shuffled = h36m_rig("S9").to_dict()  # cameras are taken from the rig by id, in any order
    shuffled["cameras"] = shuffled["cameras"][::-1]
    again = predict_keypoints(setup["dropout"], setup["points"], rig=rig_from_dict(shuffled), device="cpu")
    np.testing.assert_allclose(again.root, result.root, atol=1e-6)

    points = setup["points"].copy()  # the pelvis in one view only: placed from the pose, in that view
    points[5, 1:, 0] = np.nan
    single = predict_keypoints(setup["dropout"], points, rig="h36m:S9", device="cpu")
    assert single.root_views[5] == 1 and single.views_used[5].tolist() == [True, False, False, False]
    assert np.isfinite(single.root).all() and (single.root_views[np.arange(len(points)) != 5] == 4).all()
    missing = np.isnan(points).any(axis=-1)  # exact from the true pose (the 1-epoch model's is far from it)
    truth = setup["positions"] - setup["positions"][:, :1]
    root, views = locate_root(points, missing, list(h36m_rig("S9").cameras), truth, ~missing.any(axis=2))
    assert np.abs(root - setup["root"]).max() < 1.0 and views[5] == 1


# ------------------------------------------------------------------------------ COCO-17

def hand_made_coco():
    coco = np.zeros((17, 2))
    places = {"left_hip": (110, 300), "right_hip": (90, 302), "left_shoulder": (120, 200),
              "right_shoulder": (80, 204), "left_ear": (108, 170), "right_ear": (96, 170),
              "nose": (101, 175), "left_eye": (104, 168), "right_eye": (98, 168),
              "left_knee": (111, 400), "right_knee": (89, 401), "left_ankle": (112, 500), "right_ankle": (88, 499),
              "left_elbow": (130, 250), "right_elbow": (70, 250), "left_wrist": (135, 300),
              "right_wrist": (65, 300)}
    for name, place in places.items():
        coco[COCO[name]] = place
    return coco


def test_coco_keypoints_become_the_human36m_joints():
    coco = hand_made_coco()
    h36m, missing = coco_to_h36m(coco)
    mid = lambda a, b: (coco[COCO[a]] + coco[COCO[b]]) / 2  # noqa: E731
    pelvis, thorax = mid("left_hip", "right_hip"), mid("left_shoulder", "right_shoulder")
    ears = mid("left_ear", "right_ear")
    np.testing.assert_allclose(h36m[0], pelvis)
    np.testing.assert_allclose(h36m[8], thorax)
    np.testing.assert_allclose(h36m[7], (pelvis + thorax) / 2)
    np.testing.assert_allclose(h36m[9], thorax + 2 / 3 * (ears - thorax))
    np.testing.assert_allclose(h36m[10], ears + 1 / 3 * (ears - thorax))
    for h36m_joint, coco_name in ((1, "right_hip"), (2, "right_knee"), (3, "right_ankle"), (4, "left_hip"),
                                  (5, "left_knee"), (6, "left_ankle"), (11, "left_shoulder"), (12, "left_elbow"),
                                  (13, "left_wrist"), (14, "right_shoulder"), (15, "right_elbow"), (16, "right_wrist")):
        np.testing.assert_array_equal(h36m[h36m_joint], coco[COCO[coco_name]])
    assert not missing.any()

    coco[COCO["left_ear"]] = np.nan  # a derived joint is missing when any keypoint it is made from is
    h36m, missing = coco_to_h36m(coco)
    assert np.flatnonzero(missing).tolist() == [9, 10] and np.isnan(h36m[[9, 10]]).all()
    coco[COCO["nose"]] = np.nan  # the COCO nose and eyes are not used
    assert np.flatnonzero(coco_to_h36m(coco)[1]).tolist() == [9, 10]


def test_coco_keypoints_predict_as_their_conversion_does(setup):
    coco = np.broadcast_to(hand_made_coco() * 2 + 400, (3, 4, 17, 2)).copy()
    scores = np.ones((3, 4, 17))
    as_coco = predict_keypoints(setup["dropout"], np.concatenate([coco, scores[..., None]], -1), format="coco17",
                                device="cpu")
    as_h36m = predict_keypoints(setup["dropout"], coco_to_h36m(coco)[0], device="cpu")
    np.testing.assert_allclose(as_coco.poses, as_h36m.poses, atol=1e-4)
    assert as_coco.provenance["format"] == "coco17"

    scores[1, 2, COCO["right_hip"]] = 0.0  # confidence 0: missing, and so are the joints made from it
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["plain"], np.concatenate([coco, scores[..., None]], -1), format="coco17")
    assert "frame 1, camera 2, Hip (COCO right_hip missing)" in one_line(error)


# ------------------------------------------------------------------------------ missing joints

def test_missing_joints_are_refused_without_view_dropout(setup, tmp_path):
    points = setup["points"].copy()
    points[12, 1, 13] = np.nan  # LWrist
    points[20, 3, 0] = np.nan
    keypoints = write_npz(tmp_path / "gaps.npz", keypoints=points, camera_ids=np.array(IDS))
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["plain"], keypoints)
    text = one_line(error)
    assert "2 missing joints" in text and "in 2 of" in text and "frame 12, camera 1 (55011271), LWrist" in text
    assert "--view_dropout" in text and "gaps.npz" in text and "min_score" not in text

    scores = np.ones(points.shape[:3])  # a confidence at or below --min_score is missing too
    scores[7, 0, 4] = 0.2
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["plain"], np.concatenate([setup["points"], scores[..., None]], -1), min_score=0.3)
    assert "frame 7, camera 0, LHip" in one_line(error) and "score <= 0.3" in one_line(error)
    assert "lower --min_score" in one_line(error)


def test_a_view_dropout_model_leaves_the_incomplete_views_out(setup):
    complete = predict_keypoints(setup["dropout"], setup["points"], device="cpu")
    points = setup["points"].copy()
    points[12, 1, 13] = np.nan
    points[30, [0, 2], 5] = np.nan
    result = predict_keypoints(setup["dropout"], points, device="cpu")
    assert result.views_used[12].tolist() == [True, False, True, True]
    assert result.views_used[30].tolist() == [False, True, False, True]
    assert result.views_used.sum() == result.views_used.size - 3
    others = np.ones(len(points), dtype=bool)
    others[[12, 30]] = False
    np.testing.assert_array_equal(result.poses[others], complete.poses[others])

    from iivformer.checkpoint import build_model, load_checkpoint
    checkpoint = load_checkpoint(setup["dropout"])
    model = build_model(checkpoint)
    inputs = setup["points"][[12]].astype(np.float32)
    prepare.normalize_in_place(inputs, prepare.Normalization.from_dict(checkpoint["normalization"]))
    alone = evaluate.predict(model, inputs, "cpu", view_mask=np.array([True, False, True, True]))
    np.testing.assert_allclose(result.poses[12], alone[0], atol=1e-4)
    assert not np.allclose(result.poses[12], complete.poses[12], atol=1e-3)

    points[40, :, 3] = np.nan  # no complete view left in frame 40
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["dropout"], points, device="cpu")
    assert "1 of" in one_line(error) and "frame 40" in one_line(error) and "RFoot" in one_line(error)


# ------------------------------------------------------------------------------ cameras and checkpoints

def test_the_views_and_cameras_must_be_the_models(setup):
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["dropout"], setup["points"][:, :3])
    assert "from 3 views" in one_line(error) and "lifts 4 views" in one_line(error)
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["dropout"], setup["points"][:, ::-1], camera_ids=IDS[::-1])
    assert "in this order" in one_line(error) and ", ".join(IDS) in one_line(error)
    renamed = h36m_rig("S9").to_dict()
    renamed["cameras"][2]["id"] = "lab-left"
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["dropout"], setup["points"], rig=rig_from_dict(renamed))
    assert "lab-left" in one_line(error) and "58860488" in one_line(error)


def test_a_plain_state_dict_needs_its_normalisation(setup, tmp_path):
    state = torch.load(setup["dropout"], weights_only=True)["best_state_dict"]
    torch.save(OrderedDict(state), tmp_path / "plain_state.pth")
    with pytest.raises(CheckpointError) as error:
        predict_keypoints(tmp_path / "plain_state.pth", setup["points"])
    assert "cpn.pth" in one_line(error) and "normalisation" in one_line(error)
    _, _, prepared = evaluate.load_for_evaluation(tmp_path / "plain_state.pth", *setup["paths"], subjects=["S9"],
                                                  train_subjects=["S1"])
    result = predict_keypoints(tmp_path / "plain_state.pth", setup["points"][:5], device="cpu",
                               normalization=prepared.normalization)
    assert result.provenance["normalization"] == "given by the caller" and result.poses.shape == (5, 17, 3)


# ------------------------------------------------------------------------------ bad files

@pytest.mark.parametrize("name, content, fragment", [
    ("short.npz", {"keypoints": np.zeros((4, 4, 16, 2))}, "16 joints"),
    ("flat.npz", {"keypoints": np.zeros((4, 17, 2))}, "expected (frames, views, 17, 2)"),
    ("inf.npz", {"keypoints": np.full((2, 4, 17, 2), np.inf)}, "infinite"),
    ("huge.npz", {"keypoints": np.full((2, 4, 17, 2), 1e9)}, "beyond"),
    ("text.npz", {"keypoints": np.full((2, 4, 17, 2), "a")}, "numbers"),
    ("none.npz", {"points": np.zeros((2, 4, 17, 2))}, "no 'keypoints'"),
    ("ids.npz", {"keypoints": np.zeros((2, 4, 17, 2)), "camera_ids": np.array(["a", "b"])}, "names 2 cameras"),
    ("both.npz", {"keypoints": np.zeros((2, 4, 17, 3)), "scores": np.ones((2, 4, 17))}, "give one of them"),
    ("scores.npz", {"keypoints": np.zeros((2, 4, 17, 2)), "scores": np.ones((2, 4))}, "'scores' has shape"),
    ("tiny.npz", {"keypoints": np.random.default_rng(0).random((2, 4, 17, 2))}, "not normalised ones"),
    ("garbage.json", "{not json", "not valid JSON"),
    ("list.json", "[1, 2]", "expected a JSON object"),
    ("ragged.json", json.dumps({"keypoints": [[[[1, 2]] * 17] * 4, [[[1, 2]] * 17] * 3]}), "equal lengths"),
    ("words.json", json.dumps({"keypoints": [[[["a", 2]] * 17] * 4]}), "not numbers"),
    ("extra.json", json.dumps({"keypoints": [], "camera": 1}), "unknown keys"),
    ("empty.json", "", "file is empty"),
])
def test_bad_keypoint_files_are_refused_in_one_line(tmp_path, name, content, fragment):
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    else:
        path.write_text(content)
    with pytest.raises(DataError) as error:
        read_keypoints(path)
    assert fragment in one_line(error) and name in one_line(error)


def test_devices_folders_and_nan_without_scores(setup, tmp_path):
    for path in ("/dev/zero", tmp_path):
        with pytest.raises(DataError) as error:
            read_keypoints(path)
        assert "not a regular file" in one_line(error)
    nan = write_npz(tmp_path / "nan.npz", keypoints=np.where(np.arange(17)[:, None] == 3, np.nan, setup["points"][:4]))
    assert read_keypoints(nan).missing[:, :, 3].all()  # NaN marks a missing joint, which the model then refuses
    with pytest.raises(IIVFormerError) as error:
        predict_keypoints(setup["plain"], nan)
    assert "16 missing joints (NaN) in 4 of 4 frames" in one_line(error)
    assert "frame 0, camera 0, RFoot" in one_line(error)
    null = tmp_path / "null.json"  # JSON's null is a missing coordinate
    null.write_text(json.dumps({"keypoints": [[[[None, 1.0]] + [[1.0, 50.0 * j] for j in range(16)]] * 4]}))
    assert read_keypoints(null).missing[0, :, 0].all() and not read_keypoints(null).missing[0, :, 1:].any()
    with pytest.raises(DataError) as error:
        keypoints_from_arrays(np.zeros((2, 4, 17, 2)), format="openpose25")
    assert "h36m17, coco17" in one_line(error)


# ------------------------------------------------------------------------------ the command line

def test_output_paths_are_a_pair():
    for out in ("r.npz", "r.json", "r", "r.NPZ"):
        npz, json_path = output_paths(f"/x/{out}")
        assert (npz.name, json_path.name) == ("r.npz", "r.json")
    assert [p.name for p in output_paths("run.1")] == ["run.1.npz", "run.1.json"]


def test_command_line_errors_are_one_line(setup, tmp_path, capsys):
    keypoints = write_npz(tmp_path / "k.npz", keypoints=setup["points"][:4])
    for args, fragment in (
            (["--keypoints", keypoints, "--out", keypoints], "is the input --keypoints"),
            (["--keypoints", tmp_path / "k.json", "--out", tmp_path / "k"], "is the input --keypoints"),
            (["--keypoints", tmp_path / "absent.npz", "--out", tmp_path / "o"], "file not found"),
            (["--keypoints", keypoints, "--out", tmp_path / "no" / "o"], "does not exist"),
            (["--keypoints", keypoints, "--out", tmp_path / "o", "--rig", tmp_path / "rig.json"], "file not found")):
        if "k.json" in str(args[1]):
            (tmp_path / "k.json").write_text("{}")
        code, out, err = run_cli(capsys, "--model_path", setup["dropout"], *args)
        assert code != 0 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "o.npz").exists()
    code, out, err = run_cli(capsys, "--model_path", setup["plain"], "--keypoints", keypoints, "--out",
                             tmp_path / "o", "--format", "coco17")
    assert code == 0 and (tmp_path / "o.npz").exists() and (tmp_path / "o.json").exists()
    assert "names no camera" in err
    code, out, err = run_cli(capsys, "--model_path", setup["dropout"], "--keypoints", keypoints, "--out",
                             tmp_path / "o2", "--rig", "h36m:S9", "--device", "cpu")
    assert code == 0, err
    saved = Prediction.load(tmp_path / "o2.json")
    np.testing.assert_allclose(saved.root, setup["root"][:4], atol=1.0)
    with pytest.raises(SystemExit):
        cli.main(["predict", "--model_path", str(setup["dropout"]), "--keypoints", str(keypoints), "--out",
                  str(tmp_path / "o3"), "--format", "openpose"])
    assert "error: " in capsys.readouterr().err
