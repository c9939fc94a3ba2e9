"""Run every notebook in notebooks/ in order, headless, and keep the executed copies.

    python tools/run_notebooks.py [--profile ci|default|paper] [--jobs N] [--timeout SECONDS] [NOTEBOOK ...]

Each notebook runs on a fresh kernel with notebooks/ as its working folder and the chosen
profile in IIVFORMER_PROFILE; the executed copy (outputs included) goes to outputs/<profile>/notebooks/.
A failure stops the run with one line naming the notebook and the cell, and a non-zero status.
A cell that does not answer within --timeout seconds (1800; no limit for the paper profile) gets
its notebook run again once on a fresh kernel (--retries): rare lost kernel messages look like that.

Up to --jobs notebooks (default 2, or 1 on a single core) run at once, each in a process of its own
with its share of the cores (OMP_NUM_THREADS). A notebook says what it waits for in its metadata,
``"iivformer": {"needs": ["02_training.ipynb"]}`` (notebooks outside this run count as done);
without "needs" it waits for every notebook before it. ``"alone": true`` (02's training) runs with
nothing beside it and every core, and no notebook after it starts before it has finished.
With another thread count torch's CPU sums round differently and a short training carries that
along: a notebook that trains beside another (06, 07) prints other figures than on every core in
JupyterLab (one epoch of the ci profile: test MPJPE 166.9 mm on one thread, 172.2 mm on two).
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _one_line(error) -> str:
    """'ValueError: its first line' for a cell error, else the error's first non-empty line."""
    name, value = getattr(error, "ename", ""), getattr(error, "evalue", "")
    text = f"{name}: {value}" if name else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _failed_cell(notebook) -> str:
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells, 1):
        if any(output.get("output_type") == "error" for output in cell.get("outputs", [])):
            return f"code cell {number}"
    return "a cell"


def _quiet_output_widget():
    """nbclient's stand-in for an ipywidgets Output widget, minus sending its state back to the
    kernel: that send goes out on the shell socket while nbclient waits on the same socket for the
    cell's reply, and now and then the reply is never seen: the run hangs with the kernel idle
    (jupyter/nbclient#312; here notebook 04's explorer, after a cell that redraws its Output
    widgets). The executed copy still records the widget's outputs."""
    from nbclient.output_widget import OutputWidget

    class QuietOutputWidget(OutputWidget):
        def send(self, data=None, metadata=None, buffers=None):
            pass

    return QuietOutputWidget


def run_one(path: Path, out_dir: Path, timeout) -> tuple:
    """Execute one notebook on a fresh kernel and write the executed copy.
    Returns (reason it failed or "", whether a cell timed out)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no kernel start-up chatter
    client.widget_registry = {"@jupyter-widgets/output": {"OutputModel": _quiet_output_widget()}}
    failure, timed_out = "", False
    try:
        client.execute()
    except CellTimeoutError:
        failure, timed_out = f"no answer within {timeout} s", True
    except Exception as error:  # noqa: BLE001 - cell errors, a dead kernel, nbclient's own errors
        failure = _one_line(error)
    finally:
        nbformat.write(notebook, out_dir / path.name)
    return (f"{_failed_cell(notebook)}: {failure}" if failure else ""), timed_out


def run(paths, out_dir: Path, timeout, retries: int = 1) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        for attempt in range(retries + 1):
            started = time.perf_counter()
            print(f"{path.name}: running ...", flush=True)
            failure, timed_out = run_one(path, out_dir, timeout)
            if not timed_out or attempt == retries:
                break
            # a cell that never answers is usually a lost kernel message (not our code): try a fresh kernel
            print(f"{path.name}: {failure}; running it again on a fresh kernel", file=sys.stderr, flush=True)
        if failure:
            print(f"error: {path.name}, {failure} (executed copy: {out_dir / path.name})", file=sys.stderr)
            return 1
        print(f"{path.name}: done in {time.perf_counter() - started:.0f} s -> {out_dir / path.name}", flush=True)
    return 0


def dependencies(paths) -> tuple[dict, set]:
    """({name: names it waits for}, names that run alone) from the notebooks' metadata (module docstring)."""
    import nbformat

    names = [path.name for path in paths]
    needs, alone = {}, set()
    for index, path in enumerate(paths):
        declared = nbformat.read(path, as_version=4).metadata.get("iivformer", {})
        wanted = declared.get("needs", names[:index])
        needs[path.name] = set(wanted) & set(names[:index])  # only earlier notebooks of this run
        if declared.get("alone"):
            alone.add(path.name)
    return needs, alone


def startable(pending: list, running: set, done: set, needs: dict, alone: set, jobs: int) -> list:
    """The pending notebooks (in run order) to start now, with `running` running and `done` finished."""
    chosen = []
    if running & alone:
        return chosen
    for name in pending:
        if len(running) + len(chosen) >= jobs:
            break
        if name in alone:  # waits for a free machine; nothing after it overtakes it
            if not running and not chosen and needs[name] <= done:
                chosen.append(name)
            break
        if needs[name] <= done:
            chosen.append(name)
    return chosen


def run_parallel(paths, out_dir: Path, jobs: int, passed: list) -> int:
    """`run` for several notebooks at once: one process of this script per notebook (their lines
    are printed as they come), `jobs` at a time, in the order `dependencies` allows."""
    needs, alone = dependencies(paths)
    by_name = {path.name: path for path in paths}
    pending, running, done, failed = [path.name for path in paths], {}, set(), []
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    while pending or running:
        for name in ([] if failed else startable(pending, set(running), done, needs, alone, jobs)):
            pending.remove(name)
            env = dict(os.environ) if name in alone else {**os.environ, "OMP_NUM_THREADS": threads}
            running[name] = subprocess.Popen([sys.executable, __file__, "--jobs", "1", "--out", str(out_dir),
                                              *passed, str(by_name[name])], env=env)
        for name, process in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            if process.returncode == 0:
                done.add(name)
            else:
                failed.append(name)
        if failed and not running:
            break
        time.sleep(0.2)
    if failed:
        print(f"error: {', '.join(failed)} failed; {len(pending)} notebooks not run", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="execute the notebooks headlessly, in order")
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: notebooks/*.ipynb)")
    parser.add_argument("--profile", help="IIVFORMER_PROFILE for the kernels (default: as set, else 'default')")
    parser.add_argument("--timeout", type=int, help="seconds allowed per cell (default: 1800, none for the paper "
                                                     "profile, whose training cell runs for hours)")
    parser.add_argument("--retries", type=int, default=1, help="runs again of a notebook whose cell timed out")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="notebooks run at once (default 2; 1: one after another in this process)")
    parser.add_argument("--out", help="folder for executed copies (default: outputs/<profile>/notebooks)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    if args.profile:
        os.environ["IIVFORMER_PROFILE"] = args.profile
    os.environ.setdefault("IIVFORMER_ROOT", str(ROOT))
    paths = [Path(p).resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: notebook not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    profile = os.environ.get("IIVFORMER_PROFILE", "default")
    if len(paths) > 1:
        print(f"running {len(paths)} notebooks with IIVFORMER_PROFILE={profile}, {min(args.jobs, len(paths))} at "
              "a time", flush=True)
    started = time.perf_counter()
    timeout = args.timeout if args.timeout else (None if profile == "paper" else 1800)
    out = Path(args.out) if args.out else Path(os.environ["IIVFORMER_ROOT"]) / "outputs" / profile / "notebooks"
    if args.jobs > 1 and len(paths) > 1:
        passed = ["--retries", str(args.retries)] + (["--timeout", str(args.timeout)] if args.timeout else [])
        status = run_parallel(paths, out, args.jobs, passed)
    else:
        status = run(paths, out, timeout, args.retries)
    if status == 0 and len(paths) > 1:
        print(f"all {len(paths)} notebooks ran in {time.perf_counter() - started:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
