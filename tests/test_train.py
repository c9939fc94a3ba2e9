import dataclasses
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from iivformer import checkpoint as ck
from iivformer import prepare, runtime, train
from iivformer.errors import IIVFormerError
from iivformer.model import ModelConfig
from iivformer.train import TrainConfig, TrainingInterrupted

FIXTURE = Path(__file__).parent / "fixtures" / "eval_fixture"
PATHS = (FIXTURE / "data_3d_h36m.npz", FIXTURE / "data_2d_h36m_fixture.npz")
TINY = ModelConfig(embed_dim_ratio=8, depth=2, num_heads=2)  # depth 2: drop path draws random numbers
TIMING = ("seconds", "samples_per_second")


def config(**changes) -> TrainConfig:
    values = dict(batch_size=64, epochs=2, lr=0.002, seed=0, device="cpu", model=TINY, eval_batch_size=512)
    return TrainConfig(**{**values, **changes})


def metrics(history):
    return [{k: v for k, v in record.items() if k not in TIMING} for record in history]


def subset(prepared, train_size, test_size, val_size=0, seed=0) -> prepare.Prepared:
    """Random samples of the fixture's splits (the validation split taken out of training)."""
    order = np.random.default_rng(seed).permutation(len(prepared.train))
    test = np.random.default_rng(seed + 1).permutation(len(prepared.test))[:test_size]
    return dataclasses.replace(
        prepared, train=prepared.train.subset(order[:train_size]), test=prepared.test.subset(test),
        val=prepared.train.subset(order[train_size:train_size + val_size]) if val_size else None,
        val_subjects=("S8",) if val_size else ())


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fixture_data():
    return prepare.prepare(*PATHS)


@pytest.fixture(scope="module")
def small(fixture_data):
    return subset(fixture_data, 384, 192)


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    """An uninterrupted 3-epoch run: its history and checkpoint."""
    folder = tmp_path_factory.mktemp("reference")
    history = train.train(config(epochs=3), small, folder / "run.pth", folder / "run.log", progress=False)
    return history, ck.load_checkpoint(folder / "run.pth")


def assert_same_weights(first: dict, second: dict):
    assert list(first) == list(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def assert_same_run(checkpoint, other):
    assert_same_weights(checkpoint["best_state_dict"], other["best_state_dict"])
    assert_same_weights(checkpoint["last"]["state_dict"], other["last"]["state_dict"])
    for a, b in zip(checkpoint["last"]["optimizer"]["state"].values(), other["last"]["optimizer"]["state"].values()):
        assert all(torch.equal(a[name], b[name]) for name in a)
    assert metrics(checkpoint["history"]) == metrics(other["history"])
    assert (checkpoint["best_epoch"], checkpoint["best_metric"]) == (other["best_epoch"], other["best_metric"])


def test_training_learns_a_learnable_toy(fixture_data, tmp_path):
    """The fixture's poses are random, so a short run only reaches the mean pose. Here the targets
    are a fixed function of the inputs (scaled 2D of views 0 and 1): the model must learn a mapping
    from inputs to poses that holds on samples it never saw, well below the mean-pose baseline."""
    toy = subset(fixture_data, 1024, 0, val_size=512)
    for split in (toy.train, toy.val):
        x = split.inputs
        split.targets = (100 * np.stack([x[:, 0, :, 0], x[:, 0, :, 1], x[:, 1, :, 0]], -1)[:, None]).astype(np.float32)
    toy = dataclasses.replace(toy, test=toy.val, val=None, val_subjects=())
    baseline = np.linalg.norm(toy.test.targets - toy.train.targets.mean(axis=0), axis=-1).mean()
    history = train.train(config(epochs=4, batch_size=32, lr=0.005, model=ModelConfig(embed_dim_ratio=8, depth=1, num_heads=2,
                                                                                        drop_path_rate=0.0)),
                          toy, tmp_path / "toy.pth", tmp_path / "toy.log", progress=False)
    train_losses = [record["train_mpjpe"] for record in history]
    assert train_losses[-1] < 0.85 * train_losses[0]
    best = min(history, key=lambda record: record["test_mpjpe"])
    assert best["test_mpjpe"] < 0.8 * baseline, (best, baseline)
    assert history[-1]["best_epoch"] == best["epoch"] and history[-1]["best_metric"] == best["test_mpjpe"]


def test_same_seed_gives_identical_runs(small, reference, tmp_path):
    history = train.train(config(epochs=3), small, tmp_path / "again.pth", tmp_path / "again.log", progress=False)
    assert metrics(history) == metrics(reference[0])
    assert_same_run(ck.load_checkpoint(tmp_path / "again.pth"), reference[1])
    other = train.train(config(epochs=1, seed=1), small, tmp_path / "other.pth", tmp_path / "other.log", progress=False)
    assert other[0]["train_mpjpe"] != history[0]["train_mpjpe"]


def test_resume_is_bit_identical_to_an_uninterrupted_run(small, reference, tmp_path):
    path, log = tmp_path / "run.pth", tmp_path / "run.log"
    train.train(config(epochs=1), small, path, log, progress=False)
    history = train.train(config(epochs=3), small, path, log, resume=True, progress=False)
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert metrics(history) == metrics(reference[0])
    assert_same_run(ck.load_checkpoint(path), reference[1])
    assert "resuming after epoch 1" in log.read_text()
    # the same epochs again: nothing left to train
    assert metrics(train.train(config(epochs=3), small, path, log, resume=True, progress=False)) == metrics(history)


def test_resume_refuses_a_changed_recipe(small, tmp_path):
    path, log = tmp_path / "run.pth", tmp_path / "run.log"
    with pytest.raises(IIVFormerError, match="cannot resume: .*run.pth not found"):
        train.train(config(), small, path, log, resume=True, progress=False)
    train.train(config(epochs=2), small, path, log, progress=False)
    before = path.read_bytes()
    with pytest.raises(IIVFormerError) as info:
        train.train(config(epochs=3, lr=0.001, batch_size=32), small, path, log, resume=True, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert "lr 0.002 in the checkpoint, 0.001 now" in message
    assert "batch_size 64 in the checkpoint, 32 now" in message
    for changes, expected in [(dict(model=dataclasses.replace(TINY, depth=3)), "depth 2 in the checkpoint, 3 now"),
                              (dict(epochs=1), "epochs 1 now, but the checkpoint has completed 2"),
                              (dict(seed=5), "seed 0 in the checkpoint, 5 now")]:
        with pytest.raises(IIVFormerError, match=re.escape(expected)):
            train.train(config(**changes), small, path, log, resume=True, progress=False)
    other_data = dataclasses.replace(small, normalization=prepare.Normalization(small.normalization.mean + 1,
                                                                             small.normalization.std))
    with pytest.raises(IIVFormerError, match="normalisation differs"):
        train.train(config(epochs=3), other_data, path, log, resume=True, progress=False)
    assert path.read_bytes() == before


def test_init_from_starts_from_the_best_weights_of_a_checkpoint(small, reference, tmp_path):
    source = tmp_path / "source.pth"
    torch.save(reference[1], source)
    # a learning rate too small to move the weights: the first epoch measures the starting weights
    history = train.train(config(epochs=1, lr=1e-12, init_from=source), small, tmp_path / "tuned.pth",
                          tmp_path / "tuned.log", progress=False)
    assert history[0]["test_mpjpe"] == pytest.approx(reference[1]["best_metric"], abs=1e-3)
    fresh = train.train(config(epochs=1, lr=1e-12), small, tmp_path / "fresh.pth", tmp_path / "fresh.log",
                        progress=False)
    assert fresh[0]["test_mpjpe"] > history[0]["test_mpjpe"] + 1  # fresh weights are worse (729 vs 722 mm)
    saved = ck.load_checkpoint(tmp_path / "tuned.pth")
    assert saved["train_config"]["init_from"] == str(source)
    assert saved["last"]["optimizer"]["state"][0]["step"] == len(small.train) / 64  # a fresh optimiser


def test_init_from_refuses_another_model_or_normalisation(small, reference, tmp_path):
    source = tmp_path / "source.pth"
    torch.save(reference[1], source)
    out = tmp_path / "run.pth"
    with pytest.raises(IIVFormerError, match=re.escape(f"cannot start from {source}: depth 2 there, 3 in this run")):
        train.train(config(model=dataclasses.replace(TINY, depth=3), init_from=source), small, out,
                    tmp_path / "run.log", progress=False)
    other = dataclasses.replace(small, normalization=prepare.Normalization(small.normalization.mean + 1,
                                                                          small.normalization.std))
    with pytest.raises(IIVFormerError, match="normalisation differs from this run's") as info:
        train.train(config(init_from=source), other, out, tmp_path / "run.log", progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(IIVFormerError, match=f"cannot start from .*missing.pth: not found"):
        train.train(config(init_from=tmp_path / "missing.pth"), small, out, tmp_path / "run.log", progress=False)
    assert not out.exists()
    train.train(config(epochs=1, init_from=source), small, out, tmp_path / "run.log", progress=False)
    with pytest.raises(IIVFormerError, match=re.escape(f"init_from {source} in the checkpoint, None now")):
        train.train(config(epochs=2), small, out, tmp_path / "run.log", resume=True, progress=False)
    resumed = train.train(config(epochs=2, init_from=source), small, out, tmp_path / "run.log", resume=True,
                          progress=False)
    assert [r["epoch"] for r in resumed] == [1, 2]


def test_training_flushes_denormals_and_restores_ieee_afterwards(small, tmp_path):
    tiny = torch.tensor([1e-39])  # a float32 denormal
    seen = []
    train.train(config(epochs=1), small, tmp_path / "run.pth", tmp_path / "run.log",
                callbacks=[lambda record: seen.append(float((tiny * 1.0)[0]))], progress=False)
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    assert seen == [0.0]  # while training
    assert float((tiny * 1.0)[0]) > 0  # and IEEE again after it


DENORMALS_IN_THREADS = textwrap.dedent("""
    import sys, torch
    from iivformer import runtime
    torch.set_num_threads(2)
    if sys.argv[1] == "workers":
        runtime.start_workers_flushing_denormals()
    big = torch.full((1 << 20,), 1e-39)  # denormals, split between this thread and a worker
    def zeros():
        return round(float(((big * 1.0) == 0).float().mean()), 2)
    with runtime.denormals_flushed():
        inside = zeros()
    print(zeros(), inside)
""")


@pytest.mark.parametrize("start, expected", [("workers", "0.5 1.0"), ("plain", "0.0 0.5")])
def test_workers_started_by_the_workbench_flush_denormals(start, expected):
    """Each thread has its own mode: torch's workers keep the one they were started with, this
    thread is IEEE outside training; without the early start, the workers never flush."""
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    done = subprocess.run([sys.executable, "-c", DENORMALS_IN_THREADS, start], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == expected.split()


def test_callbacks_get_one_record_per_epoch(small, tmp_path):
    records = []
    history = train.train(config(epochs=2), small, tmp_path / "run.pth", tmp_path / "run.log",
                          callbacks=[records.append], progress=False)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records == history
    assert set(records[0]) == {"epoch", "train_mpjpe", "test_mpjpe", "seconds", "samples_per_second",
                               "best_epoch", "best_metric"}
    assert all(np.isfinite(r["test_mpjpe"]) and r["samples_per_second"] > 0 for r in records)


def test_checkpoint_holds_the_recipe_and_loads_weights_only(small, reference, tmp_path):
    history = train.train(config(epochs=2), small, tmp_path / "run.pth", tmp_path / "run.log", progress=True)
    saved = torch.load(tmp_path / "run.pth", map_location="cpu", weights_only=True)
    assert saved["format"] == "iivformer-checkpoint" and saved["version"] == 1
    assert saved["normalization"] == small.normalization.to_dict()
    restored = prepare.Normalization.from_dict(saved["normalization"])
    assert np.array_equal(restored.mean, small.normalization.mean) and np.array_equal(restored.std, small.normalization.std)
    assert saved["model_config"] == TINY.to_dict()
    assert saved["train_config"] == config(epochs=2).to_dict()
    assert saved["selected_on"] == "test" and saved["seed"] == 0 and saved["last"]["epoch"] == 2
    assert metrics(saved["history"]) == metrics(history)
    best = min(history, key=lambda record: record["test_mpjpe"])
    assert (saved["best_epoch"], saved["best_metric"]) == (best["epoch"], best["test_mpjpe"])
    assert set(saved["last"]["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert set(saved["versions"]) == {"iivformer", "torch", "numpy", "python"}
    model = ck.build_model(ck.load_checkpoint(tmp_path / "run.pth"))
    assert model.config == TINY


def test_log_names_device_and_selection_split(fixture_data, tmp_path):
    with_val = subset(fixture_data, 256, 128, val_size=128)
    records = train.train(config(epochs=2, select_on="val"), with_val, tmp_path / "run.pth", tmp_path / "run.log",
                          progress=False)
    assert all("val_mpjpe" in record for record in records)
    best = min(records, key=lambda record: record["val_mpjpe"])
    assert records[-1]["best_metric"] == best["val_mpjpe"]
    assert ck.load_checkpoint(tmp_path / "run.pth")["selected_on"] == "val"
    text = (tmp_path / "run.log").read_text()
    assert "device: cpu" in text and f"torch {torch.__version__}" in text
    assert "best epoch selected on: val MPJPE (held-out training subjects S8)" in text
    assert re.search(r"epoch 2/2: train MPJPE [\d.]+ mm, test MPJPE [\d.]+ mm, val MPJPE [\d.]+ mm", text)
    assert "save best model: epoch 1, val MPJPE" in text
    with pytest.raises(IIVFormerError, match="the val split is empty"):
        train.train(config(select_on="val"), subset(fixture_data, 64, 64), tmp_path / "x.pth", tmp_path / "x.log")


def test_default_selection_is_logged_as_test(small, tmp_path):
    train.train(config(epochs=1), small, tmp_path / "run.pth", tmp_path / "run.log", progress=False)
    assert "best epoch selected on: test MPJPE" in (tmp_path / "run.log").read_text()


def _with_nan_target(prepared, index):
    targets = prepared.train.targets.copy()
    targets[index, 0, 3, 1] = np.nan
    return dataclasses.replace(prepared, train=dataclasses.replace(prepared.train, targets=targets))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small, tmp_path):
    path, log = tmp_path / "run.pth", tmp_path / "run.log"
    train.train(config(epochs=1), small, path, log, progress=False)
    before = path.read_bytes()
    with pytest.raises(IIVFormerError) as info:
        train.train(config(epochs=3), _with_nan_target(small, 100), path, log, resume=True, progress=False)
    message = str(info.value)
    assert "\n" not in message
    found = re.fullmatch(r"training diverged: non-finite loss at epoch 2, batch (\d+) \(lr 0.002\); "
                         r"the last good checkpoint \(epoch 1\) is kept in (.*)", message)
    assert found and found.group(2) == str(path), message
    # batch numbers count from 1; the bad one is where sample 100 fell in epoch 2's order
    assert 1 <= int(found.group(1)) <= 6
    assert path.read_bytes() == before
    assert "training diverged" in log.read_text()
    # diverging in the first epoch writes nothing
    fresh = tmp_path / "fresh.pth"
    with pytest.raises(IIVFormerError, match="epoch 1, batch .*no checkpoint was written"):
        train.train(config(), _with_nan_target(small, 0), fresh, log, progress=False)
    assert not fresh.exists()


def test_ctrl_c_keeps_the_last_epoch_and_resumes_exactly(small, reference, tmp_path, monkeypatch, capsys):
    path, log = tmp_path / "run.pth", tmp_path / "run.log"
    armed, calls = [False], [0]
    real_loss = train.mpjpe

    def loss(pred, target):
        if armed[0]:
            calls[0] += 1
            if calls[0] == 3:  # the third batch of epoch 2
                raise KeyboardInterrupt
        return real_loss(pred, target)

    monkeypatch.setattr(train, "mpjpe", loss)
    with pytest.raises(TrainingInterrupted) as info:
        train.train(config(epochs=3), small, path, log, callbacks=[lambda record: armed.__setitem__(0, True)],
                    progress=False)
    message = str(info.value)
    assert message == (f"interrupted during epoch 2; the last completed epoch (1) is saved in {path}; "
                       "continue with --resume")
    assert isinstance(info.value, IIVFormerError)
    assert capsys.readouterr().err == ""  # said once, by whoever catches the exception (the CLI: "error: ...")
    assert message in log.read_text()
    assert ck.load_checkpoint(path)["last"]["epoch"] == 1
    monkeypatch.undo()
    history = train.train(config(epochs=3), small, path, log, resume=True, progress=False)
    assert metrics(history) == metrics(reference[0])
    assert_same_run(ck.load_checkpoint(path), reference[1])


def test_ctrl_c_in_a_callback_after_the_save(small, tmp_path):
    def stop(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match=r"interrupted after epoch 2, which is saved in .*--resume"):
        train.train(config(epochs=3), small, tmp_path / "run.pth", tmp_path / "run.log", callbacks=[stop],
                    progress=False)
    assert ck.load_checkpoint(tmp_path / "run.pth")["last"]["epoch"] == 2


@pytest.mark.parametrize("changes,expected", [
    (dict(epochs=0), "epochs must be positive, not 0"),
    (dict(batch_size=-4), "batch_size must be positive, not -4"),
    (dict(batch_size=2.5), "batch_size must be an integer"),
    (dict(lr=0.0), "lr must be a positive number"),
    (dict(lr=float("nan")), "lr must be a positive number"),
    (dict(lr=-1e-3), "lr must be a positive number"),
    (dict(eval_batch_size=0), "eval_batch_size must be positive"),
    (dict(seed=-1), "seed must be non-negative"),
    (dict(select_on="train"), "select_on must be 'test' or 'val'"),
    (dict(init_from=3), "init_from must be the path of a checkpoint, not 3"),
    (dict(init_from=""), "init_from must be the path of a checkpoint"),
])
def test_bad_config_values_are_one_line_errors(changes, expected):
    with pytest.raises(IIVFormerError, match=re.escape(expected)) as info:
        config(**changes)
    assert "\n" not in str(info.value)


def test_bad_values_set_later_are_refused_before_training(small, tmp_path):
    cfg = config()
    cfg.epochs = -1
    with pytest.raises(IIVFormerError, match="epochs must be positive"):
        train.train(cfg, small, tmp_path / "run.pth", tmp_path / "run.log")
    assert not list(tmp_path.iterdir())


def test_output_folders_are_checked_before_training(small, tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(IIVFormerError, match=r"checkpoint .*run.pth: the folder .* does not exist") as info:
        train.train(config(), small, missing / "run.pth", tmp_path / "run.log")
    assert "\n" not in str(info.value)
    with pytest.raises(IIVFormerError, match=r"log .*run.log: the folder .* does not exist"):
        train.train(config(), small, tmp_path / "run.pth", missing / "run.log")
    with pytest.raises(IIVFormerError, match="is a folder"):
        train.train(config(), small, tmp_path, tmp_path / "run.log")
    with pytest.raises(IIVFormerError, match="log .* does not exist"):
        train.check_output_paths(tmp_path / "run.pth", missing / "run.log")
    train.check_output_paths(tmp_path / "run.pth", tmp_path / "run.log")
    assert not list(tmp_path.iterdir())


def test_a_failed_checkpoint_write_is_a_one_line_error(small, tmp_path, monkeypatch):
    path = tmp_path / "run.pth"
    train.train(config(epochs=1), small, path, tmp_path / "run.log", progress=False)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(IIVFormerError, match="after epoch 2: cannot write .*run.pth: No space left on device"):
        train.train(config(epochs=2), small, path, tmp_path / "run.log", resume=True, progress=False)
    assert path.read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_requested_without_cuda(small, tmp_path):
    with pytest.raises(IIVFormerError, match="'cuda' requested but CUDA is not available") as info:
        runtime.resolve_device("cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(IIVFormerError, match="CUDA is not available"):
        train.train(config(device="cuda"), small, tmp_path / "run.pth", tmp_path / "run.log")
    assert not list(tmp_path.iterdir())
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(IIVFormerError, match="unknown device 'gpu0'"):
        runtime.resolve_device("gpu0")


def test_model_and_data_shapes_must_agree(small, tmp_path):
    with pytest.raises(IIVFormerError, match=r"the model expects \(N, 3, 17, 2\)"):
        train.train(config(model=dataclasses.replace(TINY, num_view=3)), small, tmp_path / "r.pth", tmp_path / "r.log")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_while_saving_leaves_the_previous_checkpoint(tmp_path):
    """A real crash: the process kills itself half-way through writing epoch 3's checkpoint."""
    path = tmp_path / "run.pth"
    script = textwrap.dedent(f"""
        import dataclasses, os, signal, sys
        import numpy as np, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train import PATHS, config, subset
        from iivformer import prepare, runtime, train
        real_save, calls = torch.save, [0]
        def dying_save(obj, stream, *args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                stream.write(b"PK\\x03\\x04 the first bytes of epoch 3")
                stream.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, stream, *args, **kwargs)
        torch.save = dying_save
        torch.set_num_threads(1)
        small = subset(prepare.prepare(*PATHS), 128, 64)
        train.train(config(epochs=4), small, {str(path)!r}, {str(tmp_path / "run.log")!r}, progress=False)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    saved = ck.load_checkpoint(path)
    assert saved["last"]["epoch"] == 2 and len(saved["history"]) == 2
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the half-written temporary, never renamed over the checkpoint


def test_a_small_model_learns_the_tiny_synthetic_set(tmp_path):
    """A few CPU epochs on the tiny synthetic set end far below the mean-pose baseline."""
    from iivformer import baselines, metrics, synthetic

    prepared = prepare.prepare(*synthetic.write_dataset(tmp_path / "tiny", preset="tiny", seed=0, progress=False))
    baseline = metrics.mpjpe(baselines.mean_pose(prepared.train, prepared.test), prepared.test.targets[:, 0])
    config = TrainConfig(epochs=4, batch_size=64, lr=3e-3, seed=0, device="cpu",
                         model=ModelConfig(embed_dim_ratio=16, depth=2, num_heads=4))
    history = train.train(config, prepared, tmp_path / "m.pth", tmp_path / "m.log", progress=False)
    best = min(record["test_mpjpe"] for record in history)
    assert best < 0.5 * baseline, (best, baseline)
