"""`make test` after `make demo`: the tests and the notebooks under nbval leave the demo's data,
figures, tables and checkpoint alone (they write into a temporary root, see conftest.py)."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_notebooks_under_nbval_leave_the_demo_outputs_unchanged(tmp_path):
    """A repository as `make demo` leaves it (default-profile figures, tables, checkpoint, data), then
    the ci notebooks that write data and a checkpoint run under nbval there, as `make test` runs them."""
    pytest.importorskip("nbval")  # installed by `make test`; absent from a bare torch environment
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "conftest.py"):
        shutil.copy(REPOSITORY / name, checkout / name)
    shutil.copytree(REPOSITORY / "notebooks", checkout / "notebooks", ignore=shutil.ignore_patterns(".ipynb*"))
    (checkout / "iivformer").symlink_to(REPOSITORY / "iivformer")
    demo = {"outputs/default/checkpoint.pth": b"the demo's model", "outputs/default/figures/per_action.png": b"png",
            "outputs/default/tables/results_per_action.tex": b"tex", "data/synthetic/tiny/data_3d_h36m.npz": b"3d",
            "data/synthetic/tiny/data_2d_h36m_synthetic.npz": b"2d"}
    for name, content in demo.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes(content)
    before = {**_files(checkout / "outputs"), **_files(checkout / "data")}
    environment = {key: value for key, value in os.environ.items() if key != "IIVFORMER_ROOT"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "notebooks/01_data_preparation.ipynb", "notebooks/02_training.ipynb"],
        cwd=checkout, env={**environment, "IIVFORMER_PROFILE": "ci"}, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert {**_files(checkout / "outputs"), **_files(checkout / "data")} == before
