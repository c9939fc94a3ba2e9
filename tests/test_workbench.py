"""iivformer.workbench: the notebooks' set-up, where files go, which dataset is used, the saved evaluation."""
from pathlib import Path

import pytest

from iivformer import config, train, workbench
from iivformer.errors import IIVFormerError


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("IIVFORMER_ROOT", str(tmp_path))
    return tmp_path


def test_profiles_resolve_from_the_environment(monkeypatch):
    monkeypatch.delenv("IIVFORMER_PROFILE", raising=False)
    assert workbench.current_profile().name == "default"
    for name in ("ci", "default", "paper"):
        monkeypatch.setenv("IIVFORMER_PROFILE", name)
        assert workbench.current_profile().name == name
    assert workbench.current_profile("paper").name == "paper"  # an explicit name wins over the variable
    monkeypatch.setenv("IIVFORMER_PROFILE", "fast")
    with pytest.raises(IIVFormerError, match="unknown profile 'fast'"):
        workbench.current_profile()


def test_root_found_from_a_subfolder(monkeypatch):
    monkeypatch.delenv("IIVFORMER_ROOT", raising=False)
    repository = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repository / "tests")
    assert workbench.repository_root() == repository


def _fake_writer(calls):
    def write_dataset(out_dir, preset="small", seed=0, progress=True, **options):
        calls.append(preset)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("data_3d_h36m.npz", "data_2d_h36m_synthetic.npz"):
            (out_dir / name).write_bytes(b"fake")
        return out_dir / "data_3d_h36m.npz", out_dir / "data_2d_h36m_synthetic.npz"
    return write_dataset


def test_the_synthetic_preset_is_made_once_and_both_archives_appear_together(root, monkeypatch):
    from iivformer import synthetic

    calls = []
    monkeypatch.setattr(synthetic, "write_dataset", _fake_writer(calls))
    bench = workbench.setup("default")
    assert bench.kind == "synthetic" and bench.path_3d == root / "data" / "synthetic" / "small" / "data_3d_h36m.npz"
    assert bench.path_2d.exists() and "made just now" in bench.reason and "\n" not in bench.reason
    again = workbench.setup("default")
    assert (again.path_3d, again.kind) == (bench.path_3d, "synthetic") and "made earlier" in again.reason
    assert calls == ["small"] and not list((root / "data" / "synthetic").glob(".*partial"))


def test_real_archives_win_except_for_the_ci_profile(root, monkeypatch):
    from iivformer import synthetic

    calls = []
    monkeypatch.setattr(synthetic, "write_dataset", _fake_writer(calls))
    (root / "data").mkdir()
    (root / "data" / "data_3d_h36m.npz").write_bytes(b"x")
    (root / "data" / "data_2d_h36m_cpn_ft_h36m_dbb.npz").write_bytes(b"x")
    bench = workbench.setup("default")
    assert bench.kind == "Human3.6M" and bench.path_2d.name == "data_2d_h36m_cpn_ft_h36m_dbb.npz" and calls == []
    assert "Human3.6M" in bench.banner()
    ci = workbench.setup("ci")  # reproducible checks stay on the synthetic preset
    assert ci.kind == "synthetic" and calls == ["tiny"] and "not</b> comparable" in ci.banner()


def test_each_profile_writes_to_its_own_folder(root, monkeypatch):
    from iivformer import synthetic

    monkeypatch.setattr(synthetic, "write_dataset", _fake_writer([]))
    ci, default = workbench.setup("ci"), workbench.setup("default")
    assert ci.checkpoint_path == root / "outputs" / "ci" / "checkpoint.pth"
    assert default.output_dir("figures") == root / "outputs" / "default" / "figures"
    assert len({ci.checkpoint_path, ci.log_path, ci.evaluation_path, default.checkpoint_path}) == 4
    assert ci.training_config(epochs=1).to_dict() == config.training_config("ci", epochs=1).to_dict()


def test_a_missing_checkpoint_says_which_notebook_makes_it(root, monkeypatch):
    from iivformer import synthetic

    monkeypatch.setattr(synthetic, "write_dataset", _fake_writer([]))
    with pytest.raises(IIVFormerError, match="02_training"):
        workbench.setup("ci").require_checkpoint()


def test_the_saved_evaluation_is_reused_until_the_checkpoint_changes(root, one_thread, capsys):
    bench = workbench.setup("ci")
    config_ci = bench.training_config(epochs=1, device="cpu")
    train.train(config_ci, bench.prepared, bench.checkpoint_path, bench.log_path, progress=False)
    made = workbench.setup("ci", device="cpu").evaluate()
    assert bench.evaluation_path.exists()
    loaded = workbench.setup("ci", device="cpu").evaluation  # read back, not predicted again
    assert "evaluating now" not in capsys.readouterr().err
    assert loaded.per_action("p1") == made.per_action("p1") and loaded.provenance == made.provenance
    train.train(bench.training_config(epochs=2, device="cpu"), bench.prepared, bench.checkpoint_path,
                bench.log_path, resume=True, progress=False)
    fresh = workbench.setup("ci", device="cpu").evaluation  # another checkpoint: computed once, saved
    assert "is of another checkpoint" in capsys.readouterr().err
    assert fresh.provenance["checkpoint"]["sha256"] != made.provenance["checkpoint"]["sha256"]
    assert workbench.Evaluation.load(bench.evaluation_path).provenance == fresh.provenance
