"""The `iivformer` command: summaries, one-line errors and exit codes."""
import subprocess
import sys

import pytest

import archive_factory as factory


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "iivformer", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def assert_one_line_error(completed, *fragments):
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_check_summarises_good_archives(tmp_path):
    path_3d, path_2d = factory.write(tmp_path, *factory.positions())
    completed = run("check", "--data_3d", path_3d, "--data_2d", path_2d)
    assert completed.returncode == 0, completed.stderr
    assert "7 subjects, 2 actions, 4 cameras" in completed.stdout
    assert completed.stdout.strip().endswith("ok")


def test_check_refuses_a_bad_archive_in_one_line(tmp_path):
    positions_3d, positions_2d = factory.positions()
    positions_2d["S9"]["Walking"] = positions_2d["S9"]["Walking"][:3]
    path_3d, path_2d = factory.write(tmp_path, positions_3d, positions_2d)
    assert_one_line_error(run("check", "--data_3d", path_3d, "--data_2d", path_2d),
                          str(path_2d), "subject S9", "'Walking'", "3 cameras")


def test_check_without_archives_says_what_to_do(tmp_path):
    assert_one_line_error(run("check", cwd=tmp_path), "iivformer synth")


@pytest.mark.parametrize("flags, fragment", [
    (["train", "--epochs", "0"], "--epochs: must be positive, got 0"),
    (["train", "--batch_size", "-5"], "--batch_size: must be positive"),
    (["train", "--lr", "0"], "--lr: must be a positive number"),
    (["train", "--lr", "fast"], "--lr: expected a number"),
    (["evaluate", "--protocol", "p3"], "invalid choice: 'p3'"),
    (["train", "--val_subjects", "S9"], "S9 not among the training subjects"),
    (["evaluate", "--subjects", "[S9"], "--subjects: cannot read"),
])
def test_bad_flags_get_one_line_errors(tmp_path, flags, fragment):
    assert_one_line_error(run(*flags, cwd=tmp_path), fragment)


def test_a_reader_that_goes_away_is_not_a_traceback():
    """`iivformer cite | head -0`: the pipe closes before the output is written."""
    process = subprocess.Popen([sys.executable, "-m", "iivformer", "cite"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    error = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and error == ""
