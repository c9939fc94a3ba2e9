"""Outputs that must not replace what is not ours, checks before work, signals, pairs and messages."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import archive_factory as factory
from iivformer import archives, files, logbook, synthetic
from iivformer.errors import DataError, IIVFormerError
from test_cli import assert_one_line_error, run

SMALL_MODEL = ["--embed_dim_ratio", "8", "--depth", "1", "--num_heads", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return factory.write(tmp_path_factory.mktemp("pair"), *factory.positions())


def test_device_nodes_fifos_and_folders_are_refused_as_outputs(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, fragment in (("/dev/null", "not a regular file"), (fifo, "not a regular file"), (tmp_path, "is a folder")):
        with pytest.raises(IIVFormerError, match=fragment):
            files.check_writable(path, "--out")
    link = tmp_path / "null_link"
    link.symlink_to("/dev/null")
    with pytest.raises(IIVFormerError, match="not a regular file"):
        files.write_text(link, "never written")
    assert Path("/dev/null").is_char_device() and link.is_symlink()


def test_a_symbolic_link_is_followed_and_stays_a_link(tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    files.write_json(link, {"p1": 1.0})
    assert link.is_symlink() and target.read_text() == '{\n "p1": 1.0\n}\n'


def test_an_output_that_is_an_input_or_another_output_is_refused(pair, tmp_path):
    path_3d, path_2d = pair
    before = path_3d.read_bytes()
    assert_one_line_error(run("train", "--data_3d", path_3d, "--data_2d", path_2d, "--model_path", path_3d,
                              "--log", tmp_path / "m.log", *SMALL_MODEL), "is the input --data_3d")
    assert_one_line_error(run("train", "--data_3d", path_3d, "--data_2d", path_2d, "--model_path", tmp_path / "m.pth",
                              "--log", tmp_path / "m.pth", *SMALL_MODEL), "are the same file")
    assert_one_line_error(run("evaluate", "--data_3d", path_3d, "--data_2d", path_2d, "--model_path", path_2d,
                              "--json", path_2d), "is the input --model_path")
    model = tmp_path / "m.pth"
    model.write_bytes(b"a checkpoint")
    assert_one_line_error(run("export", "--model_path", model, "--out", model), "is the input --model_path")
    assert path_3d.read_bytes() == before and model.read_bytes() == b"a checkpoint"


def test_outputs_are_checked_before_any_work(pair, tmp_path):
    path_3d, path_2d = pair
    for flags in (["evaluate", "--data_3d", path_3d, "--data_2d", path_2d, "--model_path", tmp_path / "none.pth",
                   "--json", tmp_path / "missing" / "r.json"],
                  ["export", "--model_path", tmp_path / "none.pth", "--out", tmp_path / "missing" / "w.pth"]):
        assert_one_line_error(run(*flags), "does not exist")  # before the checkpoint is even looked for
    (tmp_path / "a_file").write_text("")
    assert_one_line_error(run("synth", "--preset", "tiny", "--out", tmp_path / "a_file" / "deeper"),
                          f"{tmp_path / 'a_file'} is not a folder")


def test_two_trainings_on_one_checkpoint_do_not_both_write_it(pair, tmp_path):
    from iivformer import config, prepare, train

    path = tmp_path / "m.pth"
    prepared = prepare.prepare(*pair)
    with files.exclusive_lock(path, "checkpoint"):
        with pytest.raises(IIVFormerError, match="another run is writing it now"):
            train.train(config.training_config("ci", epochs=1, device="cpu"), prepared, path, tmp_path / "m.log",
                        progress=False)
    assert not path.exists()


def test_temporary_files_of_killed_runs_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "results.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".results.json.{int(dead.stdout)}.deadbeef.tmp"
    live = tmp_path / f".results.json.{os.getpid()}.cafecafe.tmp"
    stale.write_text("half")
    live.write_text("being written")
    files.write_json(target, {})
    assert not stale.exists() and live.exists() and target.exists()


def test_sigterm_ends_training_like_ctrl_c(tmp_path):
    path = tmp_path / "m.pth"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import archive_factory as factory
        from pathlib import Path
        from iivformer import config, prepare, train
        from iivformer.errors import TrainingInterrupted
        prepared = prepare.prepare(*factory.write(Path({str(tmp_path)!r}), *factory.positions()))
        stop = lambda record: os.kill(os.getpid(), signal.SIGTERM) if record["epoch"] == 1 else None
        try:
            train.train(config.training_config("ci", epochs=3, device="cpu"), prepared, {str(path)!r},
                        {str(tmp_path / "m.log")!r}, callbacks=[stop], progress=False)
        except TrainingInterrupted as error:
            print(error)
            sys.exit(error.exit_status)
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 130, completed.stderr
    assert completed.stdout.strip() == f"interrupted after epoch 1, which is saved in {path}; continue with --resume"
    from iivformer.checkpoint import load_checkpoint

    assert load_checkpoint(path)["last"]["epoch"] == 1 and "interrupted after epoch 1" in (tmp_path / "m.log").read_text()


def test_a_log_that_cannot_be_written_says_so_once(tmp_path, capsys):
    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

    with logbook.TrainingLog(tmp_path / "run.log", echo=False) as log:
        log.logger.handlers[0].stream = FullDisk()
        for index in range(100):
            log.info(f"line {index}")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"warning: cannot write the log {tmp_path / 'run.log'}: No space left on device; "
                     "training goes on without it"]


def test_archives_of_two_synthetic_runs_are_not_a_pair(tmp_path):
    first = synthetic.write_dataset(tmp_path / "a", preset="tiny", seed=0, progress=False)
    second = synthetic.write_dataset(tmp_path / "b", preset="tiny", seed=1, progress=False)
    assert archives.load_archives(*first).subjects
    with pytest.raises(DataError, match="was made from another 3D archive"):
        archives.load_archives(first[0], second[1])


def test_names_from_a_file_reach_the_terminal_escaped(tmp_path):
    positions_3d, positions_2d = factory.positions()
    hostile = "Walking\x1b[2J\nerror: all is fine"
    positions_3d["S1"][hostile] = positions_3d["S1"]["Walking"]
    path_3d, path_2d = factory.write(tmp_path, positions_3d, positions_2d)
    completed = run("check", "--data_3d", path_3d, "--data_2d", path_2d)
    assert_one_line_error(completed, "no 2D detections", "\\x1b[2J\\nerror")
    assert "\x1b" not in completed.stderr


@pytest.mark.parametrize("flags, fragment", [
    (["synth", "--detector_noise", "1e30"], "detector_noise must be between 0 and 200 pixels"),
    (["synth", "--detector_noise", "-1"], "must be a number >= 0"),
    (["train", "--seed", str(2 ** 32)], "--seed: must be below 2**32"),
    (["train", "--num_heads", "3"], "num_heads 3 does not divide embed_dim_ratio 32"),
    (["train", "--embed_dim_ratio", "8192"], "parameters (more than 1,000,000,000)"),
    (["train", "--embed_dim_ratio", "100000"], "embed_dim_ratio 100000 is above the limit of 65536"),
])
def test_flags_that_would_fail_later_are_refused_first(tmp_path, flags, fragment):
    assert_one_line_error(run(*flags, cwd=tmp_path), fragment)  # no archives in tmp_path: flags come first


def test_a_subject_without_recordings_is_refused(tmp_path):
    positions_3d, positions_2d = factory.positions()
    positions_3d["S9"], positions_2d["S9"] = {}, {}
    path_3d, path_2d = factory.write(tmp_path, positions_3d, positions_2d)
    with pytest.raises(DataError, match="subject S9 has no recordings"):
        archives.load_archives(path_3d, path_2d, ["S9"])


@pytest.mark.parametrize("value, dtype, fragment", [
    (1e300, np.float64, "values too large for float32"),
    (5e4, np.float32, "values up to 5e\\+04 m, beyond 1000 m"),
])
def test_3d_values_out_of_range_are_refused(tmp_path, value, dtype, fragment):
    positions_3d, positions_2d = factory.positions()
    positions_3d["S5"]["Walking"] = positions_3d["S5"]["Walking"].astype(dtype)
    positions_3d["S5"]["Walking"][1, 2, 0] = value
    path_3d, _ = factory.write(tmp_path, positions_3d, positions_2d)
    with pytest.raises(DataError, match=fragment):
        archives.load_positions_3d(path_3d)


def test_an_empty_listing_says_nothing(tmp_path):
    positions_3d, positions_2d = factory.positions()
    path_3d, path_2d = factory.write(tmp_path, positions_3d, {})
    with pytest.raises(DataError, match=r"subject S1 is missing \(found: nothing\)"):
        archives.load_archives(path_3d, path_2d)


def test_the_archive_size_limit_is_a_flag(pair):
    path_3d, path_2d = pair
    assert_one_line_error(run("check", "--data_3d", path_3d, "--data_2d", path_2d, "--max_archive_gb", "0.00001"),
                          "over the limit of", "IIVFORMER_MAX_ARCHIVE_GB")
    assert run("check", "--data_3d", path_3d, "--data_2d", path_2d, "--max_archive_gb", "1").returncode == 0
