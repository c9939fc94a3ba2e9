"""Test-suite set-up shared by tests/ and the notebooks under nbval.

Everything a test or a notebook writes goes to a temporary repository root (IIVFORMER_ROOT), never
into this repository's data/ or outputs/, so that `make test` cannot overwrite what `make demo`
made. At the end, the session fails if data/ or outputs/ changed all the same.
"""
import hashlib
import os
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent
GUARDED = ("data", "outputs")


def _snapshot() -> dict:
    """{relative path: SHA-256} of every file under the guarded folders."""
    found = {}
    for name in GUARDED:
        for path in sorted((REPOSITORY / name).rglob("*")):
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(REPOSITORY))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def pytest_configure(config):
    os.environ["IIVFORMER_ROOT"] = tempfile.mkdtemp(prefix="iivformer-test-root-")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # tests share the cores with the other workers:
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread each, also in the processes they start
        import torch
        torch.set_num_threads(1)
    config._iivformer_snapshot = _snapshot()


def pytest_sessionfinish(session, exitstatus):
    before, after = session.config._iivformer_snapshot, _snapshot()
    changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
    if changed:
        print(f"\nerror: the tests changed files in the repository: {', '.join(changed[:10])}")
        session.exitstatus = 1
