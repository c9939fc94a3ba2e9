"""iivformer export: state_dict (unchanged), TorchScript and ONNX on the eval fixture, the model card."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from iivformer import cli, config, evaluate, export, prepare, skeleton
from iivformer.cameras import camera_ids
from iivformer.checkpoint import export_state_dict, load_checkpoint
from iivformer.files import sha256
from published_recipe import recipe_state_dict

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")]
FIXTURE = Path(__file__).parent / "fixtures" / "eval_fixture"
DATA = [str(FIXTURE / "data_3d_h36m.npz"), str(FIXTURE / "data_2d_h36m_fixture.npz")]
SUBJECTS = ["S9", "S11"]
LIMIT_MM = 0.01
TRAINED_VIEWS = [0, 2, 3]
MEASURED = {}  # (model, format, batch) -> max difference in mm, printed at the end (pytest -s)


def pixels_of(views) -> np.ndarray:
    """The eval fixture's test 2D (S9, S11), raw pixels: prepared with the identity normalisation."""
    shape = (len(views), 17, 2)
    identity = prepare.Normalization(np.zeros(shape, np.float32), np.ones(shape, np.float32))
    return prepare.prepare(*DATA, train_subjects=(), test_subjects=SUBJECTS, normalization=identity,
                           views=views).test.inputs


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_thread):
    """recipe: the published architecture's recipe weights as a plain state dict, with the statistics
    evaluation recomputes; trained: a 1-epoch ci model trained on the fixture's S1 with view dropout,
    cameras 0, 2, 3; plain_trained: the same marked as trained without view dropout.
    Each with the PyTorch reference: evaluation's predictions (mm) on the fixture's test frames."""
    folder = tmp_path_factory.mktemp("export")
    recipe = folder / "recipe.pth"
    torch.save(recipe_state_dict(3), recipe)
    checkpoint, model, prepared = evaluate.load_for_evaluation(recipe, *DATA, subjects=SUBJECTS)
    found = {"recipe": {"path": recipe, "normalization": prepared.normalization, "views": [0, 1, 2, 3],
                        "model": model.eval(), "expected": evaluate.predict(model, prepared.test.inputs)}}

    from iivformer import train
    settings = config.training_config("ci", device="cpu", epochs=1, view_dropout=0.3, views=TRAINED_VIEWS)
    trained = folder / "trained.pth"
    data = prepare.prepare(*DATA, train_subjects=("S1",), test_subjects=SUBJECTS, views=TRAINED_VIEWS)
    train.train(settings, data, trained, folder / "trained.log", progress=False)
    saved = torch.load(trained, weights_only=True)
    saved["train_config"]["view_dropout"] = 0.0
    torch.save(saved, folder / "plain_trained.pth")
    for name in ("trained", "plain_trained"):
        path = folder / f"{name}.pth"
        checkpoint, model, prepared = evaluate.load_for_evaluation(path, *DATA, subjects=SUBJECTS)
        found[name] = {"path": path, "normalization": None, "views": TRAINED_VIEWS, "model": model.eval(),
                       "expected": evaluate.predict(model, prepared.test.inputs)}
    found["pixels"] = {tuple(v): pixels_of(v) for v in ([0, 1, 2, 3], TRAINED_VIEWS)}
    found["folder"] = folder
    return found


@pytest.fixture(scope="module")
def exported(models):
    """(model, format) -> (path, card) of every TorchScript and ONNX export."""
    done = {}
    for name in ("recipe", "trained", "plain_trained"):
        for format in ("torchscript", "onnx"):
            out = models["folder"] / f"{name}.{'pt' if format == 'torchscript' else 'onnx'}"
            card = export.export_model(models[name]["path"], out, format, normalization=models[name]["normalization"])
            done[name, format] = (out, card)
    return done


def runner(path: Path, format: str):
    """The export run as a user runs it: torch.jit.load, or onnxruntime on the file."""
    if format == "torchscript":
        model = torch.jit.load(str(path))
        return lambda *inputs: model(*map(torch.from_numpy, inputs)).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    return lambda *inputs: session.run(["pose"], dict(zip(names, inputs)))[0]


def run_batched(run, pixels, batch, mask=None):
    outputs = []
    for start in range(0, len(pixels), batch):
        inputs = (pixels[start:start + batch],) + (() if mask is None else (mask[start:start + batch],))
        outputs.append(run(*inputs))
    return np.concatenate(outputs)


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", ["recipe", "plain_trained", "trained"])
def test_exports_take_pixels_and_match_pytorch_on_the_eval_fixture(models, exported, name, format):
    path, card = exported[name, format]
    pixels = models["pixels"][tuple(models[name]["views"])]
    expected = models[name]["expected"]  # (N, 17, 3) mm, PyTorch on numpy-normalised inputs
    run = runner(path, format)
    masked = name == "trained"
    assert [item["name"] for item in card["inputs"]] == (["keypoints", "view_mask"] if masked else ["keypoints"])
    every_view = np.ones((len(pixels), len(models[name]["views"])), bool) if masked else None
    # dynamic batch: all 940 frames at once, then the first 100 in batches of 7 (and a last one of 2)
    for batch, count in ((len(pixels), len(pixels)), (7, 100)):
        found = run_batched(run, pixels[:count], batch, None if every_view is None else every_view[:count])
        assert found.shape == (count, 1, 17, 3) and found.dtype == np.float32
        difference = float(np.abs(found[:, 0] - expected[:count]).max())
        MEASURED[name, format, batch] = difference
        assert difference < LIMIT_MM, (name, format, batch, difference)
    assert np.abs(expected).max() > 1  # mm, not a degenerate output
    assert card["check"]["max_abs_difference_mm"] < LIMIT_MM


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_view_dropout_exports_take_a_view_mask(models, exported, format):
    path, card = exported["trained", format]
    pixels = models["pixels"][tuple(TRAINED_VIEWS)]
    mask = np.random.default_rng(0).random((len(pixels), len(TRAINED_VIEWS))) < 0.5
    mask[np.arange(len(pixels)), np.arange(len(pixels)) % len(TRAINED_VIEWS)] = True
    model = models["trained"]["model"]
    normalization = prepare.Normalization.from_dict(load_checkpoint(models["trained"]["path"])["normalization"])
    inputs = pixels.copy()
    prepare.normalize_in_place(inputs, normalization)
    expected = evaluate.predict(model, inputs, view_mask=mask)
    found = run_batched(runner(path, format), pixels, 64, mask)
    difference = float(np.abs(found[:, 0] - expected).max())
    MEASURED["trained, masked", format, 64] = difference
    assert difference < LIMIT_MM
    assert card["view_mask"]["supported"] and card["inputs"][1] == {
        "name": "view_mask", "shape": ["batch", 3], "dtype": "bool", "units": card["inputs"][1]["units"]}
    # an absent view's input does not matter, as in PyTorch
    scrambled = np.where(mask[:, :, None, None], pixels, np.float32(1e6))
    np.testing.assert_allclose(run_batched(runner(path, format), scrambled, 64, mask), found, atol=LIMIT_MM)


@pytest.mark.parametrize("name", ["recipe", "trained"])
def test_the_card_names_joints_cameras_normalisation_and_frame(models, exported, name):
    for format in ("torchscript", "onnx"):
        path, card = exported[name, format]
        assert export.read_card(path) == card == json.loads(json.dumps(card))
        assert export.card_path(path).name == path.name + ".card.json"
        assert card["format"] == "iivformer-export-card" and card["version"] == 1
        assert card["export"]["format"] == format and card["export"]["file"] == path.name
        assert card["export"]["opset"] == (export.OPSET if format == "onnx" else None)
        assert card["export"]["versions"]["torch"] == torch.__version__
        source = models[name]["path"]
        assert card["source"]["checkpoint"] == source.name and card["source"]["sha256"] == sha256(source)
        assert card["model_config"] == load_checkpoint(source)["model_config"]
        assert card["joint_names"] == list(skeleton.JOINT_NAMES) and card["root_joint"] == "Hip"
        assert card["camera_ids"] == [camera_ids()[view] for view in models[name]["views"]]
        assert card["views"] == models[name]["views"] and card["rig"] == "Human3.6M"
        stored = load_checkpoint(source).get("normalization")
        expected = stored or models[name]["normalization"].to_dict()
        normalization = card["normalization"]
        assert normalization["in_graph"] and normalization["known"]
        assert normalization["source"] == ("stored in the checkpoint" if stored else "given by the caller")
        for key in ("mean", "std"):
            np.testing.assert_array_equal(np.asarray(normalization[key], np.float32),
                                          np.asarray(expected[key], np.float32))
            assert np.asarray(normalization[key]).shape == (len(models[name]["views"]), 17, 2)
        assert card["inputs"][0]["shape"] == ["batch", len(models[name]["views"]), 17, 2]
        assert card["outputs"] == [{"name": "pose", "shape": ["batch", 1, 17, 3], "dtype": "float32",
                                    "units": card["output_frame"]}]
        assert "millimetres" in card["output_frame"] and "pelvis" in card["output_frame"]
        assert card["view_mask"]["supported"] is (name == "trained")
        assert len(card["usage"].splitlines()) == 3
    # the same card is embedded in the files
    files = {f"{export.EMBEDDED_CARD}.json": ""}
    torch.jit.load(str(exported[name, "torchscript"][0]), _extra_files=files)
    assert json.loads(files[f"{export.EMBEDDED_CARD}.json"]) == exported[name, "torchscript"][1]
    session = onnxruntime.InferenceSession(str(exported[name, "onnx"][0]), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map[export.EMBEDDED_CARD]) == exported[name, "onnx"][1]
    assert onnx.load(str(exported[name, "onnx"][0])).opset_import[0].version == export.OPSET


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_the_usage_snippet_runs(models, exported, format, monkeypatch):
    path, card = exported["trained", format]
    monkeypatch.chdir(path.parent)
    pixels = models["pixels"][tuple(TRAINED_VIEWS)][:5]
    scope = {"keypoints_px": pixels, "view_mask": np.ones((5, 3), bool)}
    exec(card["usage"], scope)
    np.testing.assert_allclose(np.asarray(scope["pose_mm"])[:, 0], models["trained"]["expected"][:5], atol=LIMIT_MM)


def run_cli(capsys, *args):
    code = cli.main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_state_dict_format_is_unchanged_and_gets_a_card(models, tmp_path, capsys):
    source = models["trained"]["path"]
    export_state_dict(source, tmp_path / "before.pth")  # what `iivformer export` wrote before --format
    code, out, err = run_cli(capsys, "--model_path", source, "--out", tmp_path / "plain.pth")
    assert code == 0 and err == ""
    assert out == f"wrote {tmp_path / 'plain.pth'}\nwrote {tmp_path / 'plain.pth.card.json'}\n"
    assert (tmp_path / "plain.pth").read_bytes() == (tmp_path / "before.pth").read_bytes()
    assert run_cli(capsys, "--model_path", source, "--out", tmp_path / "again.pth", "--format", "state_dict")[0] == 0
    assert (tmp_path / "again.pth").read_bytes() == (tmp_path / "before.pth").read_bytes()
    state = torch.load(tmp_path / "plain.pth", weights_only=True)
    for key, value in load_checkpoint(source)["best_state_dict"].items():
        assert torch.equal(state[key], value)
    card = export.read_card(tmp_path / "plain.pth")
    assert card["export"]["format"] == "state_dict" and card["check"] is None
    assert card["normalization"]["in_graph"] is False and card["normalization"]["known"]
    assert card["normalization"]["mean"] == load_checkpoint(source)["normalization"]["mean"]
    assert card["inputs"][0]["units"].startswith("normalised")
    assert card["camera_ids"] == [camera_ids()[view] for view in TRAINED_VIEWS]


def test_a_plain_state_dict_exports_as_weights_but_not_as_a_graph_without_statistics(models, tmp_path, capsys):
    source = models["recipe"]["path"]
    for format in ("torchscript", "onnx"):
        code, out, err = run_cli(capsys, "--model_path", source, "--out", tmp_path / "r.bin", "--format", format)
        assert code == 1 and out == "" and err.count("\n") == 1
        assert "without the 2D normalisation" in err and "normalization=" in err and str(source) in err
        assert list(tmp_path.iterdir()) == []
    assert run_cli(capsys, "--model_path", source, "--out", tmp_path / "r.pth")[0] == 0
    card = export.read_card(tmp_path / "r.pth")
    assert card["normalization"]["known"] is False and "mean" not in card["normalization"]
    assert card["source"]["kind"] == "plain state dict" and card["camera_ids"] == camera_ids()


def test_bad_flags_and_paths_are_one_line(models, tmp_path, capsys):
    source = models["trained"]["path"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--model_path", str(source), "--out", str(tmp_path / "x"), "--format", "tflite"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'tflite'" in err
    cases = [
        (["--model_path", tmp_path / "none.pth", "--out", tmp_path / "x.onnx", "--format", "onnx"], "file not found"),
        (["--model_path", source, "--out", tmp_path / "missing" / "x.pt", "--format", "torchscript"], "does not exist"),
        (["--model_path", source, "--out", source, "--format", "onnx"], "is the input --model_path"),
        (["--model_path", source, "--out", tmp_path, "--format", "onnx"], "is a folder"),
        # the card of --out w would replace the checkpoint w.card.json
        (["--model_path", tmp_path / "w.card.json", "--out", tmp_path / "w", "--format", "torchscript"],
         "the model card"),
    ]
    shutil.copy(source, tmp_path / "w.card.json")
    (tmp_path / "folder.card.json").mkdir()
    cases.append((["--model_path", source, "--out", tmp_path / "folder", "--format", "onnx"], "is a folder"))
    for args, message in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 1 and out == "" and err.count("\n") == 1 and message in err, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.card.json", "w.card.json"]


def test_onnx_without_the_onnx_package_is_one_line(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export, "_installed", lambda package: package != "onnx")
    code, out, err = run_cli(capsys, "--model_path", models["trained"]["path"], "--out", tmp_path / "x.onnx",
                             "--format", "onnx")
    assert code == 1 and err.count("\n") == 1 and "pip install 'iivformer[export]'" in err


def test_onnx_without_onnxruntime_is_written_unchecked(models, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_installed", lambda package: package != "onnxruntime")
    card = export.export_model(models["plain_trained"]["path"], tmp_path / "x.onnx", "onnx")
    assert card["check"] is None and (tmp_path / "x.onnx").stat().st_size > 0


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_an_export_that_differs_from_pytorch_is_not_written(models, tmp_path, monkeypatch, format):
    monkeypatch.setattr(export, "TOLERANCE_MM", -1.0)  # any difference is too much
    with pytest.raises(export.IIVFormerError, match="differs from PyTorch by .* nothing was written"):
        export.export_model(models["plain_trained"]["path"], tmp_path / "x", format)
    assert list(tmp_path.iterdir()) == []


def test_given_statistics_must_fit_the_model(models, tmp_path):
    wrong = prepare.Normalization(np.zeros((3, 17, 2), np.float32), np.ones((3, 17, 2), np.float32))
    with pytest.raises(export.IIVFormerError, match=r"shape \(3, 17, 2\).*4 views"):
        export.export_model(models["recipe"]["path"], tmp_path / "x.pt", "torchscript", normalization=wrong)
    with pytest.raises(export.IIVFormerError, match="unknown export format"):
        export.export_model(models["recipe"]["path"], tmp_path / "x.pt", "tflite")


@pytest.mark.parametrize("format, target", [("torchscript", "torch.jit.trace"), ("onnx", "torch.onnx.export")])
def test_a_failing_exporter_is_one_line(models, tmp_path, monkeypatch, format, target):
    def fail(*args, **kwargs):
        raise RuntimeError("unsupported operator\naten::something")

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr({"torch.jit": torch.jit, "torch.onnx": torch.onnx}[module], name, fail)
    with pytest.raises(export.IIVFormerError, match="failed \\(RuntimeError: unsupported operator aten::something\\)"):
        export.export_model(models["plain_trained"]["path"], tmp_path / "x", format)
    assert list(tmp_path.iterdir()) == []


def test_zz_report_the_measured_differences():
    for key, value in sorted(MEASURED.items(), key=str):
        print(f"max |export - PyTorch| {key}: {value:.3g} mm")
