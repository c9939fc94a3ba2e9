"""The configuration of a run, written once: the published recipe and the profiles that scale it.

:class:`ModelConfig` and :class:`TrainConfig` hold the published IIVFormer recipe as their defaults
and nowhere else. A :class:`Profile` is a synthetic dataset preset plus overrides of those two:

    ci        tiny synthetic data, a small model, 2 epochs: every notebook in about a minute (tests)
    default   small synthetic data (or the real archives), a CPU-sized model, a few epochs
    paper     the real archives (or the full synthetic set) with the published recipe unchanged

:func:`training_config` builds the configuration of a run, for the command line and the
notebooks alike: the published defaults, then a profile's overrides, then the caller's.
"""
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from iivformer.errors import IIVFormerError, short

SELECT_ON = ("test", "val")  # which split picks the best epoch
# Batches of 1024 samples for evaluation: at 4096 the model's intermediate tensors pass glibc's
# 32 MiB mmap threshold and are page-faulted afresh every batch (4.7 s for 4096 samples against
# 4 x 0.76 s in batches of 1024, full-size model, 2 CPU threads).
EVAL_BATCH_SIZE = 1024
PRECISIONS = ("fp32", "bf16")  # the arithmetic of the training forward pass (weights and optimiser stay fp32)
MAX_PARAMETERS = 10 ** 9  # ~100x the published model; beyond it a configuration is a mistake or an attack
MODEL_LIMITS = {"num_view": 1024, "num_joints": 4096, "in_chans": 1024, "embed_dim_ratio": 65536, "depth": 128,
                "num_heads": 65536}  # beyond these a configuration is damage, not a model


def _from_dict(cls, values: dict, what: str):
    """`cls` made from a dict of its fields; one IIVFormerError line naming unknown keys."""
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise IIVFormerError(f"{what} has unknown keys: {', '.join(map(str, unknown))}")
    return cls(**values)


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
        and math.isfinite(value)


@dataclass(frozen=True)
class ModelConfig:
    """IIVFormer's architecture (the published one by default)."""

    num_view: int = 4
    num_joints: int = 17
    in_chans: int = 2
    embed_dim_ratio: int = 32  # C, the per-joint width; the inter-view width is J*C
    depth: int = 4  # blocks in each of the two stacks
    num_heads: int = 8
    mlp_ratio: float = 2.0
    qkv_bias: bool = True
    qk_scale: float | None = None  # None: head_dim ** -0.5
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1

    def __post_init__(self):
        """Refuse (one IIVFormerError line) a value of the wrong type or beyond :data:`MODEL_LIMITS`,
        and a model above :data:`MAX_PARAMETERS`, before anything is built."""
        for name, limit in MODEL_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise IIVFormerError(f"model {name} must be a positive integer, not {short(value)}")
            if value > limit:
                raise IIVFormerError(f"model {name} {value} is above the limit of {limit}")
        if self.embed_dim_ratio % self.num_heads:  # then it divides the inter-view width J*C too
            raise IIVFormerError(f"model num_heads {self.num_heads} does not divide embed_dim_ratio "
                                 f"{self.embed_dim_ratio}")
        if not _is_number(self.mlp_ratio) or not 0 < self.mlp_ratio <= 64 or int(self.embed_dim_ratio * self.mlp_ratio) < 1:
            raise IIVFormerError(f"model mlp_ratio must be a number in (0, 64] leaving hidden units, "
                                 f"not {short(self.mlp_ratio)}")
        if not isinstance(self.qkv_bias, bool):
            raise IIVFormerError(f"model qkv_bias must be true or false, not {short(self.qkv_bias)}")
        if self.qk_scale is not None and (not _is_number(self.qk_scale) or self.qk_scale <= 0):
            raise IIVFormerError(f"model qk_scale must be None or a positive number, not {short(self.qk_scale)}")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise IIVFormerError(f"model {name} must be a number in [0, 1), not {short(getattr(self, name))}")
        count = self.parameter_count()
        if count > MAX_PARAMETERS:
            raise IIVFormerError(f"the model would have {count:,} parameters (more than {MAX_PARAMETERS:,}): "
                                 f"embed_dim_ratio {self.embed_dim_ratio}, depth {self.depth}, "
                                 f"{self.num_joints} joints, {self.num_view} views")

    def parameter_count(self) -> int:
        """The number of parameters of IIVFormer with this configuration, computed without building it."""
        C, J, V = self.embed_dim_ratio, self.num_joints, self.num_view

        def block(width: int) -> int:
            hidden = int(width * self.mlp_ratio)
            attention = width * 3 * width + (3 * width if self.qkv_bias else 0) + width * width + width
            return 4 * width + attention + width * hidden + hidden + hidden * width + width

        embedding = self.in_chans * C + C + J * C + V * J * C
        stacks = self.depth * (block(C) + block(J * C)) + 2 * C + 2 * J * C
        head = (V + 1) + 2 * J * C + J * C * 3 * J + 3 * J
        return embedding + stacks + head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        return _from_dict(cls, values, "model config")


@dataclass
class TrainConfig:
    """How to train (the published recipe by default: Adam, MPJPE loss, best epoch kept)."""

    batch_size: int = 1024
    epochs: int = 100
    lr: float = 0.0004
    seed: int = 42
    device: str = "auto"  # "auto": CUDA when present, else CPU
    model: ModelConfig = field(default_factory=ModelConfig)
    select_on: str = "test"  # which split picks the best epoch: "test" (published) or "val"
    eval_batch_size: int = EVAL_BATCH_SIZE
    views: tuple = None  # camera indices the model sees, in order; None: every camera of the archives
    view_dropout: float = 0.0  # per-view probability of leaving a view out of a training sample (one always stays)
    init_from: str = None  # a checkpoint whose best weights start the run (fine-tuning); None: fresh seeded weights
    # How fast, not what: neither is compared on resume (see iivformer.train).
    precision: str = "fp32"  # "bf16": the forward pass and loss under bfloat16 autocast; weights, optimiser fp32
    compile: bool = False  # torch.compile the model for the training steps (eager, with a warning, if unavailable)

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        self.validate()

    def validate(self) -> None:
        """Raise IIVFormerError (one line) for a value that cannot train."""
        for name in ("batch_size", "epochs", "eval_batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise IIVFormerError(f"{name} must be an integer, not {value!r}")
            if value < 0 or (value == 0 and name != "seed"):
                raise IIVFormerError(f"{name} must be {'non-negative' if name == 'seed' else 'positive'}, not {value}")
            setattr(self, name, int(value))
        if self.seed >= 2 ** 32:
            raise IIVFormerError(f"seed must be below 2**32, not {self.seed}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float, np.floating)) \
                or not math.isfinite(self.lr) or self.lr <= 0:
            raise IIVFormerError(f"lr must be a positive number, not {self.lr!r}")
        self.lr = float(self.lr)
        if self.select_on not in SELECT_ON:
            raise IIVFormerError(f"select_on must be 'test' or 'val', not {self.select_on!r}")
        if not isinstance(self.model, ModelConfig):
            raise IIVFormerError(f"model must be a ModelConfig, not {type(self.model).__name__}")
        if not isinstance(self.device, str):
            raise IIVFormerError(f"device must be a string such as 'auto', 'cpu' or 'cuda', not {self.device!r}")
        if self.views is not None:
            self.views = tuple(self.views)
            if len(self.views) != self.model.num_view:
                raise IIVFormerError(f"views {list(self.views)} are {len(self.views)} cameras but the model takes "
                                     f"{self.model.num_view} views")
        if not _is_number(self.view_dropout) or not 0 <= self.view_dropout < 1:
            raise IIVFormerError(f"view_dropout must be a probability in [0, 1), not {short(self.view_dropout)}")
        self.view_dropout = float(self.view_dropout)
        if isinstance(self.init_from, os.PathLike):
            self.init_from = os.fspath(self.init_from)
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise IIVFormerError(f"init_from must be the path of a checkpoint, not {short(self.init_from)}")
        if self.precision not in PRECISIONS:
            raise IIVFormerError(f"precision must be {' or '.join(map(repr, PRECISIONS))}, not {short(self.precision)}")
        if not isinstance(self.compile, (bool, np.bool_)):
            raise IIVFormerError(f"compile must be true or false, not {short(self.compile)}")
        self.compile = bool(self.compile)

    def to_dict(self) -> dict:
        return asdict(self)  # the model config becomes a dict too

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return _from_dict(cls, values, "training config")


@dataclass(frozen=True)
class Profile:
    """A scale to run at: a synthetic dataset preset plus overrides of the published configs."""

    name: str
    preset: str  # the synthetic preset used when the real archives are absent
    train: dict = field(default_factory=dict)  # TrainConfig fields that differ from the recipe
    model: dict = field(default_factory=dict)  # ModelConfig fields that differ from the recipe
    use_real_data: bool = True  # False: always the synthetic preset (reproducible checks)

    def summary(self) -> str:
        """One Markdown line saying what this profile runs."""
        config = training_config(self.name)
        model = config.model
        return (f"**Profile `{self.name}`**: synthetic preset `{self.preset}` when the real archives are "
                f"{'absent' if self.use_real_data else 'ignored'}; model width {model.embed_dim_ratio} per joint, "
                f"depth {model.depth}, {model.num_heads} heads; {config.epochs} epochs, batch {config.batch_size}, "
                f"lr {config.lr:g}.")


# Measured on 2 idle CPU cores (torch 2.13): ci trains in ~10 s (test MPJPE ~95 mm on 'tiny'),
# default in ~2 min (P1 28.2-29.4 mm on 'small' over seeds 42, 1, 2; depth 2 at batch 128 gave
# 28.2-31.0 mm at 2/3 of the samples per second). Small models on few steps need a larger
# learning rate than the published one to reach millimetre scale.
PROFILES = {
    "ci": Profile("ci", "tiny", train=dict(epochs=2, batch_size=64, lr=0.004),
                  model=dict(embed_dim_ratio=8, depth=2, num_heads=2), use_real_data=False),
    "default": Profile("default", "small", train=dict(epochs=5, batch_size=64, lr=0.002),
                       model=dict(embed_dim_ratio=16, depth=1, num_heads=4)),
    "paper": Profile("paper", "full"),  # the published recipe unchanged
}
_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def get_profile(name: str) -> Profile:
    """The profile called `name`; a one-line error listing the valid names otherwise."""
    if name not in PROFILES:
        raise IIVFormerError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def training_config(profile: str = None, **overrides) -> TrainConfig:
    """The published recipe, then the overrides of `profile` (if named), then `overrides`.

    `overrides` may name TrainConfig fields (epochs, lr, device, ...) and ModelConfig fields
    (embed_dim_ratio, depth, num_heads, ...) alike; a None value keeps what is below it.
    """
    chosen = get_profile(profile) if profile is not None else Profile("published", "full")
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - _MODEL_FIELDS - {f.name for f in fields(TrainConfig)} - {"model"})
    if unknown:
        raise IIVFormerError(f"unknown settings: {', '.join(unknown)}")
    model_values = {**chosen.model, **{k: v for k, v in given.items() if k in _MODEL_FIELDS}}
    if given.get("views") is not None:  # the model takes as many views as the cameras chosen
        model_values.setdefault("num_view", len(given["views"]))
    model = replace(given.pop("model", ModelConfig()), **model_values)
    train_values = {**chosen.train, **{k: v for k, v in given.items() if k not in _MODEL_FIELDS}}
    return TrainConfig(model=model, **train_values)
