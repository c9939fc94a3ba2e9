"""iivformer.profiles: the IIVFORMER_PROFILE switch, where files go, which dataset is used."""
from pathlib import Path

import pytest

from iivformer import profiles
from iivformer.errors import IIVFormerError
from iivformer.model import ModelConfig
from iivformer.train import TrainConfig


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("IIVFORMER_ROOT", str(tmp_path))
    return tmp_path


def test_profiles_resolve(monkeypatch):
    monkeypatch.delenv("IIVFORMER_PROFILE", raising=False)
    assert profiles.current_profile().name == "default"
    for name in ("ci", "default", "paper"):
        monkeypatch.setenv("IIVFORMER_PROFILE", name)
        assert profiles.current_profile().name == name
    assert profiles.current_profile("paper").name == "paper"  # an explicit name wins over the variable


def test_unknown_profile_is_one_line_listing_the_valid_ones(monkeypatch):
    monkeypatch.setenv("IIVFORMER_PROFILE", "fast")
    with pytest.raises(IIVFormerError) as error:
        profiles.current_profile()
    message = str(error.value)
    assert "\n" not in message and "'fast'" in message
    assert all(name in message for name in ("ci", "default", "paper"))


def test_paper_profile_is_the_published_recipe():
    paper, published = profiles.PROFILES["paper"], TrainConfig()
    assert (paper.batch_size, paper.epochs, paper.lr, paper.seed) == (1024, 100, 0.0004, 42)
    assert paper.train_config().to_dict() == published.to_dict()
    assert paper.model == ModelConfig()


def test_train_config_overrides():
    ci = profiles.PROFILES["ci"]
    config = ci.train_config("cpu", epochs=3, lr=None)
    assert (config.epochs, config.lr, config.batch_size, config.device) == (3, ci.lr, ci.batch_size, "cpu")
    assert config.model == ci.model
    assert ci.preset == "tiny" and not ci.use_real_data


def test_paths_under_the_root(root):
    ci = profiles.PROFILES["ci"]
    assert profiles.repository_root() == root.resolve()
    assert ci.checkpoint_path == root / "outputs" / "checkpoints" / "ci.pth"
    assert ci.log_path.name == "ci.log"
    assert ci.output_dir("figures").is_dir() and ci.data_dir == root / "data"


def test_root_found_from_a_subfolder(monkeypatch):
    monkeypatch.delenv("IIVFORMER_ROOT", raising=False)
    repository = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repository / "tests")
    assert profiles.repository_root() == repository


def _fake_writer(calls):
    def write_dataset(out_dir, preset="small", seed=0, progress=True, **options):
        calls.append(preset)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("data_3d_h36m.npz", "data_2d_h36m_synthetic.npz"):
            (out_dir / name).write_bytes(b"fake")
        return out_dir / "data_3d_h36m.npz", out_dir / "data_2d_h36m_synthetic.npz"
    return write_dataset


def test_ensure_dataset_makes_the_synthetic_preset_once(root, monkeypatch):
    from iivformer import synthetic

    calls = []
    monkeypatch.setattr(synthetic, "write_dataset", _fake_writer(calls))
    path_3d, path_2d, kind, reason = profiles.ensure_dataset(profiles.PROFILES["default"])
    assert kind == "synthetic" and path_3d == root / "data" / "synthetic" / "small" / "data_3d_h36m.npz"
    assert path_2d.exists() and "made" in reason and "\n" not in reason
    again = profiles.ensure_dataset(profiles.PROFILES["default"])
    assert again[:3] == (path_3d, path_2d, "synthetic") and "earlier" in again[3] and calls == ["small"]
    assert not list((root / "data" / "synthetic").glob(".*partial"))


def test_ensure_dataset_prefers_real_archives(root, monkeypatch):
    from iivformer import synthetic

    calls = []
    monkeypatch.setattr(synthetic, "write_dataset", _fake_writer(calls))
    (root / "data").mkdir()
    (root / "data" / "data_3d_h36m.npz").write_bytes(b"x")
    (root / "data" / "data_2d_h36m_cpn_ft_h36m_dbb.npz").write_bytes(b"x")
    path_3d, path_2d, kind, reason = profiles.ensure_dataset(profiles.PROFILES["default"])
    assert kind == "Human3.6M" and path_2d.name == "data_2d_h36m_cpn_ft_h36m_dbb.npz" and calls == []
    # the ci profile stays on its synthetic preset so its checks are reproducible
    assert profiles.ensure_dataset(profiles.PROFILES["ci"])[2] == "synthetic" and calls == ["tiny"]
    assert "synthetic" in profiles.dataset_banner(*profiles.ensure_dataset(profiles.PROFILES["ci"]))


def test_missing_checkpoint_says_what_to_run(root):
    with pytest.raises(IIVFormerError, match="02_training"):
        profiles.require_checkpoint(profiles.PROFILES["ci"])
