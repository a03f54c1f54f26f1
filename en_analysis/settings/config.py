"""One resolved configuration for a run: defaults <- preset <- TOML file <- ``section.key=value``.

Every step reads its settings from here, and ``config.toml`` in the run folder holds the resolved
result, so a run can always be reproduced or resumed from its own folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from ..core.errors import UserError
from ..core.io import read_text
from . import choices


@dataclass
class ModelConfig:
    norm: str = "en"  # choices.NORMS
    width: int = 16  # channels of the stem; torchvision's resnet50 has 64
    stem: str = "small"  # "small" (3x3 conv, no max-pool) or "imagenet" (7x7/2 conv + max-pool)
    stem_stride: int = 2  # small stem only
    normalizers: list[str] = field(default_factory=lambda: ["in", "ln", "bn"])
    reduction: int = 16  # ratio sub-network: 2C -> C/reduction -> 1
    zero_init_residual: bool = True  # last norm gamma of each block = 0
    sync_bn_stats: bool = False  # all-reduce EN's BN statistics across processes


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # fashion-mnist | cifar10 | cifar100 | imagefolder | synthetic
    root: str = ""  # "" = the dataset's default location
    train_samples: int = 0  # 0 = the whole training split, else a seeded class-balanced subset
    val_samples: int = 0  # per-epoch validation subset of the held-out split, 0 = all of it
    image_size: int = 0  # 0 = the dataset's own (28, 32, or 224 for image folders)
    augment: str = "crop-flip"  # none | flip | crop-flip (random crop with padding + flip)
    download: bool = False  # torchvision download where no local copy exists (never in tests)
    num_workers: int = 0
    categories_file: str = ""  # CSV/TOML (category, synset) overriding the built-in mapping
    skip_bad_images: bool = False  # image folders: leave out unreadable files instead of stopping


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 64  # global: split across processes under torchrun
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_drops: list[int] = field(default_factory=lambda: [6, 9])  # x lr_gamma after these epochs
    lr_gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up, per step
    ratio_lr_mult: float = 10.0  # the EN ratio sub-network's learning rate multiplier
    ratio_weight_decay: float = 0.0
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast (EN statistics stay float32)
    channels_last: bool = False
    threads: int = 0  # torch CPU threads, 0 = torch's default
    compile: bool = False  # run the model under torch.compile (see the README's measurements)
    # the Python EN layer as one compiled graph each way, where the C++ kernel does not run
    # (GPU, bf16, synced BN statistics; README)
    compile_en_layers: bool = False


@dataclass
class AnalysisConfig:
    categories: list[str] = field(default_factory=list)  # evaluation categories; [] = all
    per_category: int = 50
    subset_seed: int = 0
    batch_size: int = 100
    epochs: list[int] = field(default_factory=list)  # epochs to analyse; [] = every checkpoint
    scaling: str = "zscore"  # raw | zscore | clr (feature scaling before t-SNE and metrics)
    perplexity: float = 30.0
    tsne_mode: str = "aligned"  # aligned | independent
    tsne_seed: int = 0  # t-SNE's random state
    n_jobs: int = 1
    knn: int = 5
    panels: list[int] = field(default_factory=list)  # figure epochs; [] = chosen like the paper
    wordnet_distance: str = "wup"  # wup | path | lch | hops
    # crossvalidated (unbiased squared distance between category means) | centroid | pairwise
    cluster_distance: str = "crossvalidated"
    permutations: int = 999  # label permutations; Mantel relabelings above 10 categories (else all)
    bootstrap: int = 200  # resamples of the images within categories for 95% intervals; 0 = none
    bootstrap_seed: int = 0  # seeds every resample (intervals and verdict)
    permutation_seed: int = 0  # seeds the label permutations and random relabelings
    control_seed: int = 0  # seeds the random heads
    random_heads: int = 199  # random heads the learned ratios are ranked among
    verdict_bootstrap: int = 1999  # resamples behind each verdict row's interval and p-value
    margin_knn: float = 0.02  # equivalence margin for k-NN accuracy differences
    margin_r: float = 0.1  # equivalence margin for differences of correlations
    formed_share: float = 0.9  # "formed early": share of the final clustering reached at the drop


@dataclass
class Config:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        config = cls()
        _merge(config, values, source)
        return config


SECTIONS = {f.name for f in dataclasses.fields(Config) if f.name != "name"}


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in resources.files("en_analysis.settings.presets").iterdir()
        if p.name.endswith(".toml")
    )


def _close(word: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(word, options, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(matches)}?" if matches else f" Known: {', '.join(options)}."


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{source} is not valid TOML: {e}") from None


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    def bad() -> UserError:
        return UserError(f"{source}: {key} must be {type(default).__name__}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad()
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        value = float(value)
    elif isinstance(default, str | list) and not isinstance(value, type(default)):
        raise bad()
    return value


def _merge(config: Config, values: dict[str, Any], source: str) -> None:
    for section, entries in values.items():
        if section == "name":
            config.name = _coerce(entries, config.name, "name", source)
            continue
        if section not in SECTIONS:
            raise UserError(
                f"{source}: unknown section [{section}].{_close(section, sorted(SECTIONS))}"
            )
        if not isinstance(entries, dict):
            raise UserError(f"{source}: [{section}] must be a table of settings")
        target = getattr(config, section)
        names = [f.name for f in dataclasses.fields(target)]
        for key, value in entries.items():
            if key not in names:
                raise UserError(f"{source}: unknown setting {section}.{key}.{_close(key, names)}")
            default = getattr(target, key)
            setattr(target, key, _coerce(value, default, f"{section}.{key}", source))


def parse_override(text: str) -> dict[str, Any]:
    """``section.key=value`` (value in TOML syntax; bare words are strings) -> nested dict."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise UserError(f"override {text!r} must look like section.key=value (e.g. train.epochs=3)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return {parts[0]: {parts[1]: value}}


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: Config | None = None,
) -> Config:
    """Defaults (or ``base``, e.g. a run's stored config), then a named preset, then a TOML
    file, then ``section.key=value`` overrides; validated."""
    config = Config.from_dict(base.to_dict()) if base is not None else Config()
    if preset is not None:
        names = preset_names()
        if preset not in names:
            raise UserError(f"unknown preset {preset!r}.{_close(preset, names)}")
        text = (
            resources.files("en_analysis.settings.presets").joinpath(f"{preset}.toml").read_text()
        )
        _merge(config, _read_toml(text, f"preset {preset}"), f"preset {preset}")
        config.name = preset if config.name == "run" else config.name
    if file is not None:
        path = Path(file)
        text = read_text(path)
        _merge(config, _read_toml(text, str(path)), str(path))
    for text in overrides:
        _merge(config, parse_override(text), f"override {text!r}")
    validate(config)
    return config


CHOICES = {
    ("model", "norm"): choices.NORMS,
    ("model", "stem"): choices.STEMS,
    ("data", "dataset"): choices.DATASETS,
    ("data", "augment"): choices.AUGMENTS,
    ("analysis", "scaling"): choices.SCALINGS,
    ("analysis", "tsne_mode"): choices.TSNE_MODES,
    ("analysis", "wordnet_distance"): choices.WORDNET_DISTANCES,
    ("analysis", "cluster_distance"): choices.CLUSTER_DISTANCES,
}
POSITIVE = [
    ("model", "width"),
    ("model", "reduction"),
    ("model", "stem_stride"),
    ("train", "epochs"),
    ("train", "batch_size"),
    ("analysis", "per_category"),
    ("analysis", "batch_size"),
    ("analysis", "knn"),
    ("analysis", "permutations"),
    ("analysis", "n_jobs"),
    ("analysis", "random_heads"),
    ("analysis", "verdict_bootstrap"),
]
SEED_LIMIT = 2**32 - 1  # numpy's and openTSNE's generators take 32-bit seeds
UPPER_BOUNDS = {  # beyond these a value is a typo, not a plan
    ("train", "epochs"): 10_000,
    ("train", "batch_size"): 1_000_000,
    ("train", "seed"): SEED_LIMIT,
    ("train", "threads"): 4096,
    ("model", "width"): 4096,
    ("data", "num_workers"): 1024,
    ("data", "image_size"): 4096,
    ("analysis", "per_category"): 100_000,
    ("analysis", "bootstrap"): 100_000,
    ("analysis", "permutations"): 1_000_000,
    ("analysis", "random_heads"): 100_000,
    ("analysis", "verdict_bootstrap"): 1_000_000,
    ("analysis", "tsne_seed"): SEED_LIMIT,
    ("analysis", "bootstrap_seed"): SEED_LIMIT,
    ("analysis", "permutation_seed"): SEED_LIMIT,
    ("analysis", "control_seed"): SEED_LIMIT,
}
NON_NEGATIVE = [
    ("analysis", "bootstrap"),
    ("data", "train_samples"),
    ("data", "val_samples"),
    ("data", "image_size"),
    ("data", "num_workers"),
    ("train", "lr"),
    ("train", "momentum"),
    ("train", "weight_decay"),
    ("train", "lr_gamma"),
    ("train", "warmup_epochs"),
    ("train", "ratio_lr_mult"),
    ("train", "ratio_weight_decay"),
    ("train", "seed"),
    ("train", "threads"),
    ("analysis", "subset_seed"),
    ("analysis", "tsne_seed"),
    ("analysis", "bootstrap_seed"),
    ("analysis", "permutation_seed"),
    ("analysis", "control_seed"),
]


def validate(config: Config) -> None:
    """Range and choice checks, so a bad value fails here and not an hour into a run."""
    for section in SECTIONS:
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{section}.{key} must be a finite number, got {value}")
    for (section, key), options in CHOICES.items():
        choices.check(f"{section}.{key}", getattr(getattr(config, section), key), options)
    for section, key in POSITIVE:
        if getattr(getattr(config, section), key) < 1:
            raise UserError(f"{section}.{key} must be at least 1")
    for section, key in NON_NEGATIVE:
        if getattr(getattr(config, section), key) < 0:
            raise UserError(f"{section}.{key} must not be negative")
    norms = config.model.normalizers
    if (
        not norms
        or any(n not in choices.NORMALIZERS for n in norms)
        or len(set(norms)) != len(norms)
    ):
        raise UserError(f"model.normalizers must be distinct names from {choices.NORMALIZERS}")
    if not config.analysis.perplexity > 0:
        raise UserError("analysis.perplexity must be positive")
    for key in ("margin_knn", "margin_r"):
        if not getattr(config.analysis, key) > 0:
            raise UserError(f"analysis.{key} must be positive")
    if not 0 < config.analysis.formed_share <= 1:
        raise UserError("analysis.formed_share must be in (0, 1]")
    choices.check_device("train.device", config.train.device)
    drops = config.train.lr_drops
    if any(not isinstance(d, int) or d < 1 for d in drops) or any(
        a >= b for a, b in zip(drops, drops[1:])
    ):
        raise UserError(
            "train.lr_drops must be strictly increasing epoch numbers (e.g. [30, 60, 90])"
        )
    for key in ("epochs", "panels"):
        if any(not isinstance(e, int) or e < 0 for e in getattr(config.analysis, key)):
            raise UserError(f"analysis.{key} must be a list of epoch numbers")
    categories = config.analysis.categories
    if any(not isinstance(c, str) for c in categories):  # [1, 2] in TOML: numbers, not names
        quoted = ", ".join(repr(str(c)) for c in categories)
        raise UserError(f"analysis.categories must be names in quotes, e.g. [{quoted}]")
    duplicates = sorted({c for c in categories if categories.count(c) > 1})
    if duplicates:  # a category listed twice would be counted as two classes of the same images
        raise UserError(f"analysis.categories lists {', '.join(duplicates)} more than once")
    if config.analysis.per_category < 2:
        raise UserError("analysis.per_category must be at least 2 (silhouette and k-NN need pairs)")
    name = config.name
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise UserError(f"name {name!r} must be a plain name (it names the run folder), not a path")
    for (section, key), limit in UPPER_BOUNDS.items():
        if getattr(getattr(config, section), key) > limit:
            raise UserError(f"{section}.{key} must be at most {limit:,}")
    if categories:  # the number of evaluation samples is known
        check_knn(config.analysis, config.analysis.per_category * len(categories))


def check_knn(analysis: AnalysisConfig, samples: int) -> None:
    """k-NN accuracy and trustworthiness need fewer neighbours than half the samples."""
    if 2 * analysis.knn >= samples:
        raise UserError(
            f"analysis.knn = {analysis.knn} must be less than half the {samples} evaluation "
            "samples (lower it, or raise analysis.per_category)"
        )


def save_config(config: Config, path: Path) -> None:
    from ..core.io import atomic_write_bytes

    atomic_write_bytes(path, tomli_w.dumps(config.to_dict()).encode())


def read_config(path: Path) -> Config:
    text = read_text(path)
    return Config.from_dict(_read_toml(text, str(path)), str(path))


def first_difference(
    stored: Any, asked: Any, section: str, ignore: tuple[str, ...] = ()
) -> tuple[str, Any, Any] | None:
    """The first setting of a config section that differs between two configs, as
    ``("section.key", stored value, asked value)``, or None; keys in ``ignore`` may differ."""
    old, new = dataclasses.asdict(stored), dataclasses.asdict(asked)
    for key, value in new.items():
        if key not in ignore and old[key] != value:
            return f"{section}.{key}", old[key], value
    return None


def save_analysis_settings(settings: AnalysisConfig, path: Path) -> None:
    """A named analysis's settings: an ``[analysis]`` table of their own."""
    from ..core.io import atomic_write_bytes

    atomic_write_bytes(path, tomli_w.dumps({"analysis": dataclasses.asdict(settings)}).encode())


def read_analysis_settings(path: Path) -> AnalysisConfig:
    config = read_config(path)
    validate(config)
    return config.analysis
