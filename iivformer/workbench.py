"""The notebooks' set-up in one call, and where the workbench keeps its files.

    bench = workbench.setup()       # the profile named by IIVFORMER_PROFILE (else "default")
    bench.banner()                  # which data is in use and why (HTML)
    bench.prepared                  # the archives prepared for training
    bench.evaluation                # notebook 03's saved evaluation (computed once if missing)

Files live under the repository root (``IIVFORMER_ROOT``, else the nearest folder above the
working folder holding pyproject.toml and iivformer/, else the working folder): the archives in
``data/`` (the synthetic default in ``data/synthetic/<preset>/``), and everything a profile writes
in ``outputs/<profile>/`` (checkpoint.pth, training.log, evaluation.npz, figures/, tables/,
viewer/, notebooks/), so that one profile never overwrites another's results.
"""
import os
import shutil
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from iivformer import config, prepare, runtime
from iivformer.archives import SYNTHETIC_FOLDER, find_archives, load_archives
from iivformer.errors import IIVFormerError
from iivformer.files import sha256
from iivformer.evaluate import Evaluation, evaluate_loaded, load_for_evaluation

PROFILE_VARIABLE = "IIVFORMER_PROFILE"
runtime.start_workers_flushing_denormals()  # a notebook imports this before its first parallel work


def repository_root() -> Path:
    """IIVFORMER_ROOT, else the nearest folder holding pyproject.toml and iivformer/ above the
    working folder, else the working folder."""
    if os.environ.get("IIVFORMER_ROOT"):
        return Path(os.environ["IIVFORMER_ROOT"]).resolve()
    start = Path.cwd().resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "iivformer").is_dir():
            return folder
    return start


def data_dir() -> Path:
    return repository_root() / "data"


def output_folder(profile: config.Profile, kind: str = "") -> Path:
    """outputs/<profile>/<kind>/ under the repository root, created."""
    folder = repository_root() / "outputs" / profile.name / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def current_profile(name: str = None) -> config.Profile:
    """The profile called `name`, else the one IIVFORMER_PROFILE names (default: "default")."""
    return config.get_profile(name or os.environ.get(PROFILE_VARIABLE) or "default")


def synthetic_dataset(folder, preset: str, seed: int = 0, progress: bool = False) -> tuple:
    """(path_3d, path_2d, made_now) of the synthetic `preset` in `folder`, made there first if
    missing: both archives appear together (written to a hidden folder, then renamed)."""
    folder = Path(folder)
    path_3d, path_2d = folder / "data_3d_h36m.npz", folder / "data_2d_h36m_synthetic.npz"
    if path_3d.exists() and path_2d.exists():
        return path_3d, path_2d, False
    from iivformer import synthetic

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    try:
        synthetic.write_dataset(partial, preset=preset, seed=seed, progress=progress)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path_3d, path_2d, True


def find_dataset(profile: config.Profile, progress: bool = False) -> tuple:
    """(path_3d, path_2d, "Human3.6M" | "synthetic", reason): the real archives in data/ when the
    profile may use them, else the profile's synthetic preset (made the first time)."""
    folder = data_dir()
    found = find_archives(folder) if profile.use_real_data else None
    if found is not None and found[2] == "Human3.6M":
        return found[0], found[1], "Human3.6M", f"the real Human3.6M archives were found in {folder}"
    why = ("the ci profile always uses synthetic data" if not profile.use_real_data
           else f"no real Human3.6M archives in {folder} (see data/README.md)")
    path_3d, path_2d, made = synthetic_dataset(folder / SYNTHETIC_FOLDER / profile.preset, profile.preset,
                                               progress=progress)
    when = "made just now" if made else "made earlier"
    return path_3d, path_2d, "synthetic", f"{why}; using the synthetic '{profile.preset}' set {when}"


@dataclass
class Workbench:
    """One profile's data, model and results, loaded when first asked for."""

    profile: config.Profile
    path_3d: Path
    path_2d: Path
    kind: str  # "Human3.6M" or "synthetic"
    reason: str  # why this data is in use
    device: str = "auto"

    def output_dir(self, kind: str = "") -> Path:
        """outputs/<profile>/<kind>/ (figures, tables, viewer, notebooks), created."""
        return output_folder(self.profile, kind)

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir() / "checkpoint.pth"

    @property
    def log_path(self) -> Path:
        return self.output_dir() / "training.log"

    @property
    def evaluation_path(self) -> Path:
        return self.output_dir() / "evaluation.npz"

    def banner(self) -> str:
        """An HTML box saying which data is in use and why (green: real Human3.6M, amber: synthetic)."""
        colour = "#2e7d32" if self.kind == "Human3.6M" else "#b26a00"
        note = "" if self.kind == "Human3.6M" else (" Errors on synthetic data are <b>not</b> comparable with "
                                                    "the published Human3.6M figures.")
        return (f'<div style="border-left: 6px solid {colour}; padding: 6px 12px; background: {colour}14">'
                f'<b>Data in use: {self.kind}</b> &mdash; {self.reason}.{note}'
                f'<br><code>{self.path_3d}</code><br><code>{self.path_2d}</code></div>')

    def training_config(self, **overrides) -> config.TrainConfig:
        """This profile's training configuration; keyword arguments (None: keep) override it."""
        return config.training_config(self.profile.name, **{"device": self.device, **overrides})

    @cached_property
    def archives(self):
        return load_archives(self.path_3d, self.path_2d)

    @cached_property
    def prepared(self):
        """The archives prepared for training (statistics of the training subjects)."""
        return prepare.prepare(self.archives)

    def require_checkpoint(self) -> Path:
        if not self.checkpoint_path.exists():
            raise IIVFormerError(f"no trained model at {self.checkpoint_path}: run notebooks/02_training.ipynb "
                                 f"first with the same profile ({PROFILE_VARIABLE}={self.profile.name})")
        return self.checkpoint_path

    @cached_property
    def _loaded(self) -> tuple:
        return load_for_evaluation(self.require_checkpoint(), self.archives, None)

    @property
    def checkpoint(self) -> dict:
        return self._loaded[0]

    @property
    def model(self):
        return self._loaded[1]

    @property
    def model_data(self):
        """The test subjects prepared with the checkpoint's normalisation (what the evaluation covers)."""
        return self._loaded[2]

    def evaluate(self) -> Evaluation:
        """Evaluate the profile's checkpoint on the test subjects, save it, and keep it."""
        result = evaluate_loaded(self.checkpoint, self.model, self.model_data, self.checkpoint_path,
                                          self.path_3d, self.path_2d, self.device)
        result.save(self.evaluation_path)
        self.__dict__["evaluation"] = result
        return result

    @cached_property
    def evaluation(self) -> Evaluation:
        """The evaluation notebook 03 saved, if it is of the current checkpoint and archives;
        else it is computed once now (and saved), saying so."""
        if self.evaluation_path.exists():
            saved = Evaluation.load(self.evaluation_path)
            if _same_inputs(saved.provenance, self.require_checkpoint(), self.path_3d, self.path_2d):
                return saved
            why = "is of another checkpoint or other archives"
        else:
            why = "is missing"
        print(f"the saved evaluation {self.evaluation_path} {why} (notebooks/03_evaluation.ipynb makes it): "
              "evaluating now", file=sys.stderr)
        return self.evaluate()


def _same_inputs(record: dict, checkpoint_path, path_3d, path_2d) -> bool:
    """Whether a provenance record names these very files (by SHA-256)."""
    try:
        return (record["checkpoint"]["sha256"] == sha256(checkpoint_path)
                and record["data_3d"]["sha256"] == sha256(path_3d)
                and record["data_2d"]["sha256"] == sha256(path_2d))
    except (KeyError, TypeError):
        return False


def setup(profile: str = None, device: str = "auto", progress: bool = False) -> Workbench:
    """The workbench of a profile (default: IIVFORMER_PROFILE, else "default"): its data found or
    made; data, model and evaluation loaded when first used."""
    chosen = current_profile(profile)
    path_3d, path_2d, kind, reason = find_dataset(chosen, progress=progress)
    return Workbench(chosen, Path(path_3d), Path(path_2d), kind, reason, device)
