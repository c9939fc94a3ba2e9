"""The training engine's speed options: several processes (torchrun, gloo on CPU), bf16, torch.compile,
and the default path bit-for-bit what it was before they existed.

The multi-process runs are real: `python -m torch.distributed.run --standalone --nproc_per_node 2
-m iivformer train ...` (standalone: torchrun picks a free port itself), on archives of a few
hundred samples and a one-block model, each launch under a hard timeout.
"""
import dataclasses
import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import archive_factory as factory
from iivformer import checkpoint as ck
from iivformer import cli, distributed, evaluate, prepare, runtime, train
from iivformer.config import ModelConfig, TrainConfig
from iivformer.errors import IIVFormerError
from iivformer.metrics import mpjpe
from iivformer.model import IIVFormer

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "eval_fixture"
PATHS = (FIXTURE / "data_3d_h36m.npz", FIXTURE / "data_2d_h36m_fixture.npz")
TINY = ModelConfig(embed_dim_ratio=8, depth=2, num_heads=2)
# depth 1: stochastic depth's rates are linspace(0, 0.1, depth) = [0.0], so training draws no random
# numbers and two processes must do what one does, up to the order of float sums
# --device cpu: gloo between CPU processes also where a GPU is visible (tests/test_cuda.py runs NCCL)
FLAGS = ["--profile", "ci", "--epochs", "3", "--depth", "1", "--lr", "0.02", "--batch_size", "64", "--device", "cpu"]
LAUNCH_TIMEOUT_S = 120
DYING_SCRIPT = """
import os, sys
from iivformer import train
from iivformer.cli import main
real, calls = train.mpjpe, [0]
def loss(predicted, target):  # rank 1 dies in the middle of epoch 2 (4 batches per epoch)
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == 6:
        os._exit(7)
    return real(predicted, target)
train.mpjpe = loss
sys.exit(main())
"""


# ------------------------------------------------------------------ helpers
def weights_sha256(state: dict) -> str:
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def metrics(history) -> list:
    return [{k: v for k, v in record.items() if k not in ck.TIMING_FIELDS} for record in history]


def fixture_subset(train_size=384, test_size=192) -> prepare.Prepared:
    """The subset tests/test_train.py trains on (its `small`)."""
    prepared = prepare.prepare(*PATHS)
    order = np.random.default_rng(0).permutation(len(prepared.train))
    test = np.random.default_rng(1).permutation(len(prepared.test))[:test_size]
    return dataclasses.replace(prepared, train=prepared.train.subset(order[:train_size]),
                               test=prepared.test.subset(test))


def config(**changes) -> TrainConfig:
    values = dict(batch_size=64, epochs=2, lr=0.002, seed=0, device="cpu", model=TINY, eval_batch_size=512)
    return TrainConfig(**{**values, **changes})


def clean_environment() -> dict:
    """This process's environment without any torchrun variables (a test run under torchrun)."""
    environment = {k: v for k, v in os.environ.items() if k not in (*distributed._VARIABLES, "TORCHELASTIC_RUN_ID")}
    return {**environment, "OMP_NUM_THREADS": "1", distributed.TIMEOUT_VARIABLE: "60"}


def torchrun(folder: Path, program: list, *args) -> subprocess.CompletedProcess:
    """One launch of 2 processes in `folder`. A launch in which a process died of SIGABRT is made once
    more, from the folder as it was before the first (what that launch wrote is put back), with a
    warning that keeps what it said: gloo's TCP transport can abort a process on a connection its peer
    dropped (pytorch/pytorch#188266), which says nothing of the training. Every launch here is
    deterministic given its folder: a fresh run from nothing, a resumed one from its checkpoint."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *program,
               *map(str, args)]
    before = Path(tempfile.mkdtemp(prefix="before-launch-")) / folder.name
    shutil.copytree(folder, before)
    try:
        for attempt in (1, 2):
            done = subprocess.run(command, cwd=folder, env=clean_environment(), capture_output=True, text=True,
                                  timeout=LAUNCH_TIMEOUT_S)
            if attempt == 2 or not re.search(r"exitcode\s*:\s*-6\b", done.stderr):
                return done
            warnings.warn(f"a process of the launch died of SIGABRT; launching once more:\n{launch_report(done)}")
            shutil.rmtree(folder)
            shutil.copytree(before, folder)
    finally:
        shutil.rmtree(before.parent)


def launch_report(done: subprocess.CompletedProcess) -> str:
    """What a failed launch's processes said (progress bars left out), before torchrun's own
    traceback and summary, then the summary's end: the cause is seldom in the summary alone."""
    text = "\n".join(line for line in re.split(r"[\r\n]", done.stderr) if line.strip() and "batch/s" not in line)
    launcher = text.rfind("Traceback (most recent call last)", 0, max(text.rfind("ChildFailedError"), 0))
    ranks = text[:launcher] if launcher >= 0 else text
    return f"{ranks[-3000:]}\n[...]\n{text[-600:]}"


def errors(stderr: str) -> list:
    """The `error: ...` lines among stderr (progress bars redraw with carriage returns)."""
    return [line[line.index("error: "):] for line in re.split(r"[\r\n]", stderr) if "error: " in line]


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archives")
    return factory.write(folder, *factory.positions(seed=3))


@pytest.fixture(scope="module")
def two_processes(archives, tmp_path_factory):
    """An uninterrupted 3-epoch run in two processes: (folder, completed process, checkpoint)."""
    folder = tmp_path_factory.mktemp("ddp")
    done = torchrun(folder, ["-m", "iivformer"], "train", "--data_3d", archives[0], "--data_2d", archives[1],
                    *FLAGS, "--model_path", "run.pth", "--log_file", "run.log")
    assert done.returncode == 0, launch_report(done)
    return folder, done, ck.load_checkpoint(folder / "run.pth")


# ------------------------------------------------------------------ several processes
def test_two_processes_train_as_one_with_the_same_global_batch(two_processes, archives, tmp_path, capsys):
    folder, done, saved = two_processes
    assert cli.main(["train", "--data_3d", str(archives[0]), "--data_2d", str(archives[1]), *FLAGS,
                     "--model_path", str(tmp_path / "one.pth"), "--log", str(tmp_path / "one.log")]) == 0
    single = ck.load_checkpoint(tmp_path / "one.pth")
    assert len(saved["history"]) == len(single["history"]) == 3
    # Measured: at most 1.7e-7 relative apart (0.00016 mm of ~900 mm, test MPJPE after epoch 3). The
    # gradients differ by float-sum noise (each process sums its half, gloo adds the halves), which
    # Adam scales up to lr-sized steps only in parameters whose gradient is zero in exact arithmetic
    # (the keys' bias, the view-mean bias before a LayerNorm), so the gap grows slowly with the
    # epochs. 1e-5 (0.009 mm) leaves a margin of 60 and fails for any real difference in the
    # optimisation (another batch composition, a lost or doubled share, a wrong loss weight: >1e-4).
    for ours, theirs in zip(saved["history"], single["history"]):
        assert ours["epoch"] == theirs["epoch"] and ours["best_epoch"] == theirs["best_epoch"]
        for name in ("train_mpjpe", "test_mpjpe"):
            assert math.isclose(ours[name], theirs[name], rel_tol=1e-5), (name, ours, theirs)
    assert saved["train_config"] == single["train_config"]  # the same recipe: the processes are not part of it
    # rank 0 alone wrote: one checkpoint, one log with one header, one summary line
    assert sorted(p.name for p in folder.iterdir()) == [".run.pth.lock", "run.log", "run.pth"]
    log = (folder / "run.log").read_text()
    assert log.count("=== IIVFormer training ===") == 1 and log.count("epoch 3/3:") == 1
    assert "processes: 2 (gloo); each takes 32 samples of every global batch of 64" in log
    assert done.stdout.count("best epoch 3") + done.stdout.count("best epoch 2") + done.stdout.count("best epoch 1") == 1
    assert errors(done.stderr) == []
    # the checkpoint is an ordinary one: plain parameter names, evaluates to its recorded metric
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in saved["best_state_dict"])
    result = evaluate.evaluate_checkpoint(folder / "run.pth", *archives, device="cpu")
    assert math.isclose(float(result.errors["p1"].mean()), saved["best_metric"], rel_tol=1e-5)


def test_a_dead_process_leaves_the_last_epoch_and_the_run_resumes_exactly(two_processes, archives, tmp_path):
    script = tmp_path / "dying.py"
    script.write_text(DYING_SCRIPT)
    data = ["--data_3d", archives[0], "--data_2d", archives[1], *FLAGS, "--model_path", "run.pth", "--log_file",
            "run.log"]
    died = torchrun(tmp_path, [str(script)], "train", *data)
    assert died.returncode != 0
    said = errors(died.stderr)
    assert len(said) == 1, launch_report(died)
    # rank 0 sees the lost peer, or (when torchrun's SIGTERM reaches it first) is interrupted: either way
    # it names epoch 1 as the one kept
    assert re.fullmatch(r"error: (rank 0: another training process died or stopped answering during epoch 2 "
                        r"\(.*\); the last completed epoch \(1\) is saved in run.pth|interrupted during epoch 2; "
                        r"the last completed epoch \(1\) is saved in run.pth; continue with --resume)", said[0]), said
    saved = ck.load_checkpoint(tmp_path / "run.pth")
    assert saved["last"]["epoch"] == 1 and len(saved["history"]) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    resumed = torchrun(tmp_path, ["-m", "iivformer"], "train", *data, "--resume")
    assert resumed.returncode == 0, launch_report(resumed)
    # each epoch's random draws and shares are fixed by (seed, epoch, rank): bit-identical on CPU
    final, uninterrupted = ck.load_checkpoint(tmp_path / "run.pth"), two_processes[2]
    assert metrics(final["history"]) == metrics(uninterrupted["history"])
    assert weights_sha256(final["last"]["state_dict"]) == weights_sha256(uninterrupted["last"]["state_dict"])
    assert "resuming after epoch 1" in (tmp_path / "run.log").read_text()


def test_a_launch_whose_process_aborts_is_made_once_more_from_the_folder_as_it_was(tmp_path):
    # rank 0 of the first launch writes into the launch's folder and aborts; the marker that says it did
    # lies outside that folder, and the second launch must find the folder as it was before the first
    folder, marker = tmp_path / "launch", tmp_path / "aborted"
    folder.mkdir()
    (folder / "kept").write_text("from before")
    (tmp_path / "abort_once.py").write_text(
        "import os, pathlib, sys\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if os.environ['RANK'] == '0' and not marker.exists():\n"
        "    marker.write_text('')\n"
        "    pathlib.Path('half-written').write_text('')\n"
        "    pathlib.Path('kept').write_text('changed')\n"
        "    os.abort()\n"
        "sys.exit(0 if not pathlib.Path('half-written').exists() and pathlib.Path('kept').read_text() == 'from before'"
        " else 3)\n")
    with pytest.warns(UserWarning, match="died of SIGABRT; launching once more"):
        assert torchrun(folder, [str(tmp_path / "abort_once.py")]).returncode == 0
    assert marker.exists() and sorted(p.name for p in folder.iterdir()) == ["kept"]
    (tmp_path / "abort_always.py").write_text("import os\nif os.environ['RANK'] == '0':\n    os.abort()\n")
    with pytest.warns(UserWarning, match="died of SIGABRT") as said:
        assert torchrun(folder, [str(tmp_path / "abort_always.py")]).returncode != 0
    assert len(said) == 1


@pytest.fixture
def as_rank(monkeypatch):
    """Make this process look like rank `rank` of a 2-process torchrun (no group is joined)."""
    def become(rank: int):
        for name, value in dict(RANK=rank, WORLD_SIZE=2, LOCAL_RANK=rank, MASTER_ADDR="127.0.0.1",
                                MASTER_PORT=1).items():
            monkeypatch.setenv(name, str(value))
    return become


def test_a_batch_the_processes_do_not_divide_is_one_line_from_rank_0(archives, tmp_path, as_rank, capsys):
    flags = ["train", "--data_3d", str(archives[0]), "--data_2d", str(archives[1]), "--profile", "ci",
             "--batch_size", "63", "--model_path", str(tmp_path / "m.pth"), "--log", str(tmp_path / "m.log")]
    as_rank(0)
    assert cli.main(flags) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: batch_size 63 is the global batch and must be divisible by the 2 processes "
        "(each takes batch_size / 2 samples of every batch)"]
    as_rank(1)  # the same error in every process: rank 0 says it
    assert cli.main(flags) == 1
    assert capsys.readouterr().err == ""
    assert not list(tmp_path.iterdir())


def test_torchrun_environment_is_read_and_checked(monkeypatch, as_rank):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.environment() is None and distributed.rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.environment() is None  # one process: a plain run
    as_rank(1)
    assert distributed.environment() == (1, 2, 1) and distributed.rank() == 1
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(IIVFormerError, match="WORLD_SIZE is 2 but MASTER_PORT is not set"):
        distributed.environment()
    as_rank(2)
    with pytest.raises(IIVFormerError, match="RANK 2 is not below WORLD_SIZE 2"):
        distributed.environment()
    as_rank(0)
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "soon")
    with pytest.raises(IIVFormerError, match="IIVFORMER_DIST_TIMEOUT must be a positive number"):
        distributed.timeout_seconds()


def test_the_last_batch_is_shared_so_that_the_mean_is_the_batch_mean():
    group = distributed.Group(1, 4, 1, "gloo", torch.device("cpu"))
    index = torch.arange(10)
    assert distributed.share(torch.arange(64), group)[1] is None  # equal shares: the plain per-process mean
    shares = [distributed.share(index, dataclasses.replace(group, rank=r)) for r in range(4)]
    assert torch.equal(torch.cat([s[0] for s in shares]), index)
    # DDP averages the 4 processes' (factor x mean of their share): each sample must weigh 1/10
    assert all(factor / 4 / len(samples) == pytest.approx(1 / 10) for samples, factor in shares)
    few = [distributed.share(torch.arange(3), dataclasses.replace(group, rank=r)) for r in range(4)]
    assert [len(s[0]) for s in few] == [1, 1, 1, 1]  # rank 0 has none: it takes one, weighted 0
    assert [s[1] for s in few] == [0.0, 4 / 3, 4 / 3, 4 / 3]


# ------------------------------------------------------------------ the default path, bf16, compile
# Recorded before precision, compile and several processes existed (train.py at bf881e3), with the
# training of `fp32_run`, and the fingerprint of the model's arithmetic it was recorded with
# (model.py at bf881e3). When iivformer/model.py changes its arithmetic the value no longer applies
# (the test says so and skips); test_the_default_loop_is_the_loop_before checks the loop on any model.
DEFAULT_PATH_SHA256 = "d1ca145cbb9c1cb6504a3461412e3625b322b5d0e3fd0f1ee1d5767df1698578"
RECORDED_WITH_MODEL = "09a1720c5653d806682ecc5722f0d9a61c68260bce93158706a31d699fa79559"


def model_fingerprint() -> str:
    """The sha256 of a seeded TINY model's training-mode output and gradients on a fixed input."""
    torch.manual_seed(0)
    model = IIVFormer(TINY)
    inputs = torch.randn(8, 4, 17, 2, generator=torch.Generator().manual_seed(1))
    output = model(inputs)
    output.square().mean().backward()
    digest = hashlib.sha256(output.detach().numpy().tobytes())
    for parameter in model.parameters():
        digest.update(parameter.grad.numpy().tobytes())
    return digest.hexdigest()


def loop_before(config: TrainConfig, prepared) -> tuple:
    """The training loop as it was before precision, compile and several processes (train.py at
    bf881e3: _start, _train_epoch, _drop_views, evaluate_mpjpe), without checkpoint or log:
    ([(train MPJPE, test MPJPE)] per epoch, last weights)."""
    runtime.seed_everything(config.seed)
    model = IIVFormer(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    inputs, targets = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32).copy())
                       for a in (prepared.train.inputs, prepared.train.targets))
    test_inputs, test_targets = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32).copy())
                                 for a in (prepared.test.inputs, prepared.test.targets))
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        n, size = len(inputs), config.batch_size
        batches = math.ceil(n / size)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, epoch]).generate_state(1)[0]))
        order = torch.randperm(n, generator=generator)
        losses = torch.zeros(batches)
        weights = torch.full((batches,), float(size))
        weights[-1] = n - size * (batches - 1)
        for b in range(batches):
            index = order[b * size:(b + 1) * size]
            present = None  # view_dropout 0
            loss = mpjpe(model(inputs[index], present), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[b] = loss.detach()
        running = float((losses * weights).sum() / weights.sum())
        with torch.no_grad():
            model.eval()
            total = torch.zeros((), dtype=torch.float64)
            for start in range(0, len(test_inputs), config.eval_batch_size):
                error = torch.linalg.vector_norm(model(test_inputs[start:start + config.eval_batch_size])
                                                 - test_targets[start:start + config.eval_batch_size], dim=-1)
                total += error.sum(dtype=torch.float64)
        history.append((running, float(total) / (test_targets.shape[0] * test_targets.shape[2])))
    return history, model.state_dict()


@pytest.fixture(scope="module")
def small():
    return fixture_subset()


@pytest.fixture(scope="module")
def fp32_run(small, tmp_path_factory):
    """One epoch of the default path: (history, checkpoint)."""
    folder = tmp_path_factory.mktemp("fp32")
    history = train.train(config(epochs=1), small, folder / "run.pth", folder / "run.log", progress=False)
    return history, ck.load_checkpoint(folder / "run.pth")


def test_the_default_loop_is_the_loop_before(small, fp32_run):
    history, weights = loop_before(config(epochs=1), small)
    assert [(r["train_mpjpe"], r["test_mpjpe"]) for r in fp32_run[0]] == history
    assert weights_sha256(fp32_run[1]["last"]["state_dict"]) == weights_sha256(weights)


def test_the_default_path_is_bit_identical_to_before(fp32_run):
    history, saved = fp32_run
    assert saved["train_config"]["precision"] == "fp32" and saved["train_config"]["compile"] is False
    assert model_fingerprint() == RECORDED_WITH_MODEL, (
        "iivformer/model.py computes differently from when DEFAULT_PATH_SHA256 was recorded (8fd2193); if that is "
        "meant (golden forward still within tolerance), record both values anew")
    assert weights_sha256(saved["last"]["state_dict"]) == DEFAULT_PATH_SHA256


def test_bf16_trains_close_to_fp32(small, fp32_run, tmp_path):
    history = train.train(config(epochs=1, precision="bf16"), small, tmp_path / "run.pth", tmp_path / "run.log",
                          progress=False)
    reference = fp32_run[0]
    # Measured 1e-6 relative apart after one epoch (train MPJPE 729.6372 vs 729.6379 mm), 3e-6 after
    # two: the fixture's random poses keep the error near the mean pose's, so the two runs stay
    # close; 1e-3 (0.7 mm) leaves a margin of 300. That bf16 really ran is checked below (a block's
    # dtype under the loop's autocast, and weights that differ from fp32's).
    for name in ("train_mpjpe", "test_mpjpe"):
        assert math.isclose(history[0][name], reference[0][name], rel_tol=1e-3), (name, history, reference)
    with runtime.forward_context("bf16", torch.device("cpu")):
        assert IIVFormer(TINY).Inter_blocks[0].mlp(torch.zeros(2, 4, 136)).dtype == torch.bfloat16
    saved = ck.load_checkpoint(tmp_path / "run.pth")
    assert all(v.dtype == torch.float32 for v in saved["last"]["state_dict"].values())
    assert all(v.dtype == torch.float32 for s in saved["last"]["optimizer"]["state"].values()
               for k, v in s.items() if k != "step")
    assert weights_sha256(saved["last"]["state_dict"]) != weights_sha256(fp32_run[1]["last"]["state_dict"])
    assert "'precision': 'bf16'" in (tmp_path / "run.log").read_text()


def test_compile_trains_what_the_eager_loop_trains(small, fp32_run, tmp_path, monkeypatch):
    """Through torch.compile (TorchDynamo's graph capture, its 'eager' backend: the inductor backend
    compiles C++ for minutes on a 2-core CPU; set IIVFORMER_TEST_INDUCTOR=1 to use it here)."""
    if not os.environ.get("IIVFORMER_TEST_INDUCTOR"):
        monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    history = train.train(config(epochs=1, compile=True), small, tmp_path / "run.pth", tmp_path / "run.log",
                          progress=False)
    log = (tmp_path / "run.log").read_text()
    if "torch.compile cannot run here" in log:
        pytest.skip(re.search(r"warning: .*", log).group(0))
    # measured: equal to the eager loop with the 'eager' backend; fused inductor kernels round differently
    for name in ("train_mpjpe", "test_mpjpe"):
        assert math.isclose(history[0][name], fp32_run[0][0][name], rel_tol=1e-4)
    saved = ck.load_checkpoint(tmp_path / "run.pth")
    assert list(saved["last"]["state_dict"]) == list(fp32_run[1]["last"]["state_dict"])  # no _orig_mod. prefix


def test_compile_that_cannot_run_warns_once_and_trains_eagerly(small, fp32_run, tmp_path, monkeypatch, capsys):
    def unavailable(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(torch, "compile", unavailable)
    train.train(config(epochs=1, compile=True), small, tmp_path / "run.pth", tmp_path / "run.log", progress=False)
    warning = ("warning: --compile: torch.compile cannot run here (RuntimeError: InvalidCxxCompiler: No working "
               "C++ compiler found); running without it")
    assert capsys.readouterr().err.splitlines() == [warning]
    assert warning in (tmp_path / "run.log").read_text()
    assert weights_sha256(ck.load_checkpoint(tmp_path / "run.pth")["last"]["state_dict"]) == \
        weights_sha256(fp32_run[1]["last"]["state_dict"])  # the eager loop, bit for bit


@pytest.mark.parametrize("changes,expected", [
    (dict(precision="fp16"), "precision must be 'fp32' or 'bf16', not 'fp16'"),
    (dict(precision=None), "precision must be 'fp32' or 'bf16', not None"),
    (dict(compile="yes"), "compile must be true or false, not 'yes'"),
])
def test_bad_precision_and_compile_are_one_line_errors(changes, expected):
    with pytest.raises(IIVFormerError, match=re.escape(expected)):
        config(**changes)


def test_resume_takes_old_checkpoints_and_a_changed_precision(small, fp32_run, tmp_path):
    """precision and compile change how fast, not what, a run learns: resume neither needs nor compares them."""
    path, log = tmp_path / "run.pth", tmp_path / "run.log"
    train.train(config(epochs=1), small, path, log, progress=False)
    saved = ck.load_checkpoint(path)
    for name in ("precision", "compile"):  # a checkpoint written before these fields existed
        del saved["train_config"][name]
    ck.save_checkpoint(path, saved)
    history = train.train(config(epochs=2, precision="bf16"), small, path, log, resume=True, progress=False)
    assert [record["epoch"] for record in history] == [1, 2]
    assert metrics(history[:1]) == metrics(fp32_run[0])
    text = log.read_text()
    assert "resumed with precision fp32 -> bf16" in text
    assert ck.load_checkpoint(path)["train_config"]["precision"] == "bf16"
