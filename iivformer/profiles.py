"""Run profiles: how much data, which model and how long to train, chosen by one environment
variable, ``IIVFORMER_PROFILE``:

    ci        tiny synthetic data, a small model, 2 epochs: every notebook in about a minute (tests)
    default   small synthetic data (or the real archives), a CPU-sized model, a few epochs
    paper     the real archives (or the full synthetic set) with the published recipe (for a GPU)

Files live under the repository root (``IIVFORMER_ROOT``, else the folder above holding
pyproject.toml): data in data/, results in outputs/ (checkpoints/, figures/, tables/, viewer/, notebooks/).
"""
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from iivformer import data
from iivformer.errors import IIVFormerError
from iivformer.model import ModelConfig


@dataclass(frozen=True)
class Profile:
    name: str
    preset: str  # synthetic preset made when the real archives are absent
    epochs: int
    batch_size: int
    lr: float = 0.0004
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    use_real_data: bool = True  # False: always the synthetic preset (reproducible checks)
    data_folder: str = "data"
    output_folder: str = "outputs"

    @property
    def data_dir(self) -> Path:
        return repository_root() / self.data_folder

    def output_dir(self, kind: str = "") -> Path:
        """outputs/<kind>/ (checkpoints, figures, tables, viewer, notebooks), created."""
        folder = repository_root() / self.output_folder / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir("checkpoints") / f"{self.name}.pth"

    @property
    def log_path(self) -> Path:
        return self.output_dir("checkpoints") / f"{self.name}.log"

    def summary(self) -> str:
        """One Markdown line saying what this profile runs."""
        m = self.model
        return (f"**Profile `{self.name}`**: synthetic preset `{self.preset}` when the real archives are "
                f"{'absent' if self.use_real_data else 'ignored'}; model width {m.embed_dim_ratio} per joint, depth "
                f"{m.depth}, {m.num_heads} heads; {self.epochs} epochs, batch {self.batch_size}, lr {self.lr:g}.")

    def train_config(self, device="auto", **overrides):
        """The training configuration of this profile; keyword arguments override fields."""
        from iivformer.train import TrainConfig

        values = dict(batch_size=self.batch_size, epochs=self.epochs, lr=self.lr, seed=self.seed, model=self.model)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return TrainConfig(device=device, **values)


# Measured on 2 idle CPU cores (torch 2.13): ci trains in ~10 s (test MPJPE ~95 mm on 'tiny'),
# default in ~3.5 min (~32 mm on 'small'). Small models on few steps need a larger learning rate
# than the published one to reach millimetre scale.
PROFILES = {
    "ci": Profile("ci", "tiny", epochs=2, batch_size=64, lr=0.004, use_real_data=False,
                  model=ModelConfig(embed_dim_ratio=8, depth=2, num_heads=2)),
    "default": Profile("default", "small", epochs=5, batch_size=128, lr=0.002,
                       model=ModelConfig(embed_dim_ratio=16, depth=2, num_heads=4)),
    "paper": Profile("paper", "full", epochs=100, batch_size=1024),  # the published recipe
}


def current_profile(name: str = None) -> Profile:
    """The profile called `name`, else the one IIVFORMER_PROFILE names (default: "default")."""
    name = name or os.environ.get("IIVFORMER_PROFILE") or "default"
    if name not in PROFILES:
        raise IIVFormerError(f"unknown profile {name!r} (IIVFORMER_PROFILE): choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def repository_root() -> Path:
    """IIVFORMER_ROOT, else the nearest folder holding pyproject.toml above the working folder
    or above this package, else the working folder."""
    if os.environ.get("IIVFORMER_ROOT"):
        return Path(os.environ["IIVFORMER_ROOT"]).resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "iivformer").is_dir():
                return folder
    return Path.cwd().resolve()


def ensure_dataset(profile: Profile, progress: bool = False) -> tuple:
    """(path_3d, path_2d, "Human3.6M" | "synthetic", reason): the real archives in data/ when the
    profile may use them, else the profile's synthetic preset in data/synthetic/<preset>/ (made
    there the first time, atomically)."""
    found = data.find_archives(profile.data_dir) if profile.use_real_data else None
    if found is not None and found[2] == "Human3.6M":
        return found[0], found[1], "Human3.6M", f"the real Human3.6M archives were found in {profile.data_dir}"
    folder = profile.data_dir / data.SYNTHETIC_FOLDER / profile.preset
    path_3d, path_2d = folder / "data_3d_h36m.npz", folder / "data_2d_h36m_synthetic.npz"
    why = ("the ci profile always uses synthetic data" if not profile.use_real_data
           else f"no real Human3.6M archives in {profile.data_dir} (see data/README.md)")
    if path_3d.exists() and path_2d.exists():
        return path_3d, path_2d, "synthetic", f"{why}; using the synthetic '{profile.preset}' set made earlier"
    from iivformer import synthetic

    partial = folder.with_name(f".{profile.preset}.{os.getpid()}.partial")
    try:
        synthetic.write_dataset(partial, preset=profile.preset, progress=progress)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path_3d, path_2d, "synthetic", f"{why}; made the synthetic '{profile.preset}' set just now"


def dataset_banner(kind: str, reason: str, path_3d, path_2d) -> str:
    """An HTML box saying which data is in use and why (green: real Human3.6M, amber: synthetic)."""
    colour = "#2e7d32" if kind == "Human3.6M" else "#b26a00"
    note = "" if kind == "Human3.6M" else (" Errors on synthetic data are <b>not</b> comparable with the "
                                           "published Human3.6M figures.")
    return (f'<div style="border-left: 6px solid {colour}; padding: 6px 12px; background: {colour}14">'
            f'<b>Data in use: {kind}</b> &mdash; {reason}.{note}'
            f'<br><code>{path_3d}</code><br><code>{path_2d}</code></div>')


def require_checkpoint(profile: Profile) -> Path:
    """The profile's checkpoint path; a one-line error saying what to run when it is missing."""
    if not profile.checkpoint_path.exists():
        raise IIVFormerError(f"no trained model at {profile.checkpoint_path}: run notebooks/02_training.ipynb "
                             f"first with the same profile (IIVFORMER_PROFILE={profile.name})")
    return profile.checkpoint_path


def evaluate_trained(profile: Profile, path_3d, path_2d, device="cpu") -> tuple:
    """(checkpoint, model, prepared test data, Evaluation) of the profile's trained model on the
    test subjects, normalised with the statistics stored in the checkpoint."""
    from iivformer.evaluate import evaluate_split, load_for_evaluation

    checkpoint, model, prepared = load_for_evaluation(require_checkpoint(profile), path_3d, path_2d,
                                                      keep_archives=True)
    return checkpoint, model, prepared, evaluate_split(model, prepared.test, device)
