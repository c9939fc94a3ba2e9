"""The CUDA paths: training, exact resume, bf16, torch.compile, evaluation, exports and torchrun
with NCCL, each against the CPU where they must agree. Skipped where no CUDA device is visible
(the CI machines); run them on a GPU machine with `pytest tests/test_cuda.py -v -s` (each test
prints what it measured)."""
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import archive_factory as factory
from iivformer import checkpoint as ck
from iivformer import cli, evaluate, export, train
from iivformer.model import IIVFormer
from published_recipe import recipe_state_dict
from test_distributed import FLAGS, PATHS, clean_environment, config, fixture_subset, metrics
from test_evaluate import EXPECTED
from test_model import GOLDEN_PATH

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")
NO_DROP = dict(drop_path_rate=0.0)  # no random draws in training: CPU and CUDA follow one path


@pytest.fixture(scope="module")
def small():
    return fixture_subset()


def trained(small, folder: Path, name: str, **changes) -> tuple:
    """(history, checkpoint path, log text) of a tiny run."""
    path = folder / f"{name}.pth"
    history = train.train(config(**changes), small, path, folder / f"{name}.log", progress=False)
    return history, path, (folder / f"{name}.log").read_text()


def tiny_model(**changes):
    return dataclasses.replace(config().model, **{**NO_DROP, **changes})


def test_golden_forward_on_cuda():
    """The published forward's golden outputs, computed on the GPU (explicit attention there)."""
    golden = np.load(GOLDEN_PATH)
    model = IIVFormer().eval().to("cuda")
    model.load_state_dict(recipe_state_dict(int(golden["weight_seed"])), strict=True)
    with torch.no_grad():
        out = model(torch.from_numpy(golden["input"]).cuda()).cpu().numpy()
    np.testing.assert_allclose(out, golden["output"], atol=1e-4, rtol=0)


def test_training_on_cuda_follows_the_cpu(small, tmp_path):
    model = tiny_model()
    on_cpu, _, _ = trained(small, tmp_path, "cpu", model=model, epochs=3)
    on_gpu, path, log = trained(small, tmp_path, "gpu", model=model, epochs=3, device="cuda")
    assert "cuda" in log and torch.cuda.get_device_name(0) in log
    gaps = [abs(a[k] - b[k]) / b[k] for a, b in zip(on_gpu, on_cpu) for k in ("train_mpjpe", "test_mpjpe")]
    print(f"\nCUDA vs CPU, 3 epochs: largest relative difference of the MPJPE history {max(gaps):.1e}")
    # the same arithmetic with float sums in another order (cuBLAS), through 18 Adam steps
    assert max(gaps) < 1e-3, (metrics(on_gpu), metrics(on_cpu))
    saved = ck.load_checkpoint(path)  # a CUDA run's checkpoint loads on a CPU-only reader
    assert all(t.device.type == "cpu" for t in saved["best_state_dict"].values())


def test_resume_on_cuda_is_exact(small, tmp_path):
    straight, path, _ = trained(small, tmp_path, "straight", epochs=2, device="cuda")
    _, resumed_path, _ = trained(small, tmp_path, "resumed", epochs=1, device="cuda")
    resumed = train.train(config(epochs=2, device="cuda"), small, resumed_path, tmp_path / "resumed.log",
                          resume=True, progress=False)
    a = ck.load_checkpoint(path)["last"]["state_dict"]
    b = ck.load_checkpoint(resumed_path)["last"]["state_dict"]
    largest = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"\nCUDA resume: largest weight difference from the uninterrupted run {largest:.1e}")
    assert metrics(resumed) == metrics(straight) and largest == 0.0


def test_evaluation_on_cuda_equals_the_cpu(small, tmp_path):
    _, path, _ = trained(small, tmp_path, "run", device="cuda")
    on = {device: evaluate.evaluate_checkpoint(path, *PATHS, device=device) for device in ("cpu", "cuda")}
    largest = 0.0
    for protocol in ("p1", "p2"):
        gap = np.abs(on["cuda"].errors[protocol] - on["cpu"].errors[protocol]).max()
        largest = max(largest, float(gap))
        assert math.isclose(on["cuda"].per_action(protocol)["mean"], on["cpu"].per_action(protocol)["mean"], abs_tol=1e-3)
    print(f"\nCUDA vs CPU evaluation: largest per-joint error difference {largest:.1e} mm")
    assert largest < 1e-2


def test_bf16_and_compile_train_on_cuda(small, tmp_path):
    model = tiny_model()
    fp32, _, _ = trained(small, tmp_path, "fp32", model=model, epochs=3, device="cuda")
    results = {}
    for name, changes in {"bf16": dict(precision="bf16"), "compile": dict(compile=True),
                          "bf16+compile": dict(precision="bf16", compile=True)}.items():
        history, path, log = trained(small, tmp_path, name.replace("+", "_"), model=model, epochs=3,
                                     device="cuda", **changes)
        assert "cannot run here" not in log, log  # Triton is there: compilation must not fall back
        results[name] = history[-1]["test_mpjpe"]
        assert ck.load_checkpoint(path)["train_config"]["precision"] == changes.get("precision", "fp32")
    print(f"\ntest MPJPE after 3 epochs on CUDA: fp32 {fp32[-1]['test_mpjpe']:.2f} mm, "
          + ", ".join(f"{name} {value:.2f} mm" for name, value in results.items()))
    assert math.isclose(results["compile"], fp32[-1]["test_mpjpe"], rel_tol=1e-3)
    for name in ("bf16", "bf16+compile"):  # bf16 rounds the forward: close, not equal
        assert math.isclose(results[name], fp32[-1]["test_mpjpe"], rel_tol=0.05)


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_exports_of_a_cuda_run_match_pytorch(small, tmp_path, format):
    if format == "onnx":
        pytest.importorskip("onnxruntime")
    _, path, _ = trained(small, tmp_path, "run", device="cuda")
    out = tmp_path / f"model.{'pt' if format == 'torchscript' else 'onnx'}"
    card = export.export_model(path, out, format=format)
    assert out.exists() and card["check"]["max_abs_difference_mm"] < 0.01, card["check"]


def torchrun_on_cuda(folder: Path, processes: int, archives) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "iivformer", "train", "--data_3d", str(archives[0]), "--data_2d", str(archives[1]), *FLAGS,
               "--device", "cuda", "--model_path", "run.pth", "--log_file", "run.log"]
    return subprocess.run(command, cwd=folder, env=clean_environment(), capture_output=True, text=True, timeout=300)


def test_torchrun_with_one_process_is_a_plain_cuda_run(tmp_path):
    archives = factory.write(tmp_path, *factory.positions(seed=3))
    done = torchrun_on_cuda(tmp_path, 1, archives)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "run.log").read_text()
    assert "device: cuda" in log and "processes:" not in log, log
    assert len(ck.load_checkpoint(tmp_path / "run.pth")["history"]) == 3


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between processes needs 2 GPUs")
def test_two_gpus_with_nccl_train_as_one(tmp_path):
    archives = factory.write(tmp_path, *factory.positions(seed=3))
    done = torchrun_on_cuda(tmp_path, 2, archives)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes: 2 (nccl); each takes 32 samples" in (tmp_path / "run.log").read_text()
    single = tmp_path / "single"
    single.mkdir()
    assert cli.main(["train", "--data_3d", str(archives[0]), "--data_2d", str(archives[1]), *FLAGS,
                     "--device", "cuda", "--model_path", str(single / "one.pth"), "--log", str(single / "one.log")]) == 0
    ours, theirs = (ck.load_checkpoint(path)["history"] for path in (tmp_path / "run.pth", single / "one.pth"))
    for a, b in zip(ours, theirs):  # the CPU test's tolerance (tests/test_distributed.py), with a margin of 10
        assert math.isclose(a["test_mpjpe"], b["test_mpjpe"], rel_tol=1e-4), (a, b)


def test_the_published_numbers_hold_on_cuda(tmp_path):
    """The published pipeline's own per-action numbers on the eval fixture, computed on the GPU."""
    path = tmp_path / "recipe.pth"
    torch.save(recipe_state_dict(EXPECTED["weight_seed"]), path)
    result = evaluate.evaluate_checkpoint(path, *PATHS, subjects=EXPECTED["subjects"], device="cuda")
    assert result.provenance["device"].startswith("cuda")
    for protocol in ("p1", "p2"):
        ours = result.per_action(protocol)
        for action, millimetres in EXPECTED[protocol].items():
            assert ours[action] == pytest.approx(millimetres, abs=0.05), (protocol, action)
