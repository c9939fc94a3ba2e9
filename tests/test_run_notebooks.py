"""tools/run_notebooks.py (make demo): which notebooks may run side by side, and a failure's report."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tools" / "run_notebooks.py"
spec = importlib.util.spec_from_file_location("run_notebooks", RUNNER)
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


def _names(prefix):
    return {name for name in (path.name for path in (ROOT / "notebooks").glob("*.ipynb")) if name[:2] in prefix}


def test_the_workbench_notebooks_wait_for_what_they_read():
    paths = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    needs, alone = runner.dependencies(paths)
    assert needs == {"01_data_preparation.ipynb": set(), "02_training.ipynb": _names({"01"}),
                     "03_evaluation.ipynb": _names({"02"}), "04_visualization.ipynb": _names({"03"}),
                     "05_paper_figures.ipynb": _names({"03"}), "06_robustness.ipynb": _names({"02"}),
                     "07_your_rig.ipynb": set()}
    assert alone == {"02_training.ipynb"}


def _schedule(needs, alone, order, jobs):
    """The notebooks running at each step, when the one started first is the first to finish."""
    pending, running, done, steps = list(order), [], set(), []
    while pending or running:
        started = runner.startable(pending, set(running), done, needs, alone, jobs)
        for name in started:
            pending.remove(name)
        running += started
        steps.append(sorted(running))
        done.add(running.pop(0))
    return steps


def test_two_jobs_run_the_notebooks_after_training_side_by_side():
    paths = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    needs, alone = runner.dependencies(paths)
    steps = _schedule(needs, alone, [p.name for p in paths], jobs=2)
    short = [[name[:2] for name in step] for step in steps]
    # 07 needs nothing, but does not overtake 02, which runs alone; 04 and 05 wait for 03
    assert short == [["01"], ["02"], ["03", "06"], ["04", "06"], ["04", "05"], ["05", "07"], ["07"]]
    assert _schedule(needs, alone, [p.name for p in paths], jobs=1) == [[p.name] for p in paths]


def test_a_notebook_without_needs_waits_for_every_earlier_one(tmp_path):
    paths = [_notebook(tmp_path / f"{name}.ipynb", "pass") for name in ("a", "b", "c")]
    needs, alone = runner.dependencies(paths)
    assert (needs, alone) == ({"a.ipynb": set(), "b.ipynb": {"a.ipynb"}, "c.ipynb": {"a.ipynb", "b.ipynb"}}, set())
    assert _schedule(needs, alone, [p.name for p in paths], jobs=4) == [["a.ipynb"], ["b.ipynb"], ["c.ipynb"]]
    assert runner.startable(["b", "c"], set(), {"a"}, {"b": {"a"}, "c": set()}, set(), 2) == ["b", "c"]
    assert runner.startable(["b", "c"], {"x"}, set(), {"b": set(), "c": set()}, {"x"}, 3) == []  # x runs alone


def _notebook(path: Path, source: str, metadata=None):
    cells = [{"cell_type": "code", "execution_count": None, "id": "c0", "metadata": {}, "outputs": [],
              "source": source}]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                "display_name": "Python 3"}, "iivformer": metadata or {}},
                                "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_side_by_side_notebooks_get_their_share_of_the_cores_and_a_failure_is_one_line(tmp_path):
    share = _notebook(tmp_path / "01_share.ipynb", "import os\nprint('threads', os.environ.get('OMP_NUM_THREADS'))",
                      {"needs": []})
    broken = _notebook(tmp_path / "02_broken.ipynb", "raise ValueError('no data here')", {"needs": []})
    after = _notebook(tmp_path / "03_after.ipynb", "print('never')")
    out = tmp_path / "executed"
    done = subprocess.run([sys.executable, str(RUNNER), "--jobs", "2", "--out", str(out), str(share), str(broken),
                           str(after)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "error: 02_broken.ipynb, code cell 1: ValueError: no data here" in done.stderr
    assert "error: 02_broken.ipynb failed; 1 notebooks not run" in done.stderr
    executed = json.loads((out / "01_share.ipynb").read_text())
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == f"threads {max(1, (os.cpu_count() or 1) // 2)}\n"
    assert not (out / "03_after.ipynb").exists()
