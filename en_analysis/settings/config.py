"""One resolved configuration for a run: defaults <- preset <- TOML file <- ``section.key=value``.

Every step reads its settings from here, and ``config.toml`` in the run folder holds the resolved
result, so a run can always be reproduced or resumed from its own folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from ..core.errors import UserError
from ..core.io import read_text
from . import choices
from .rules import (
    SEED_LIMIT,
    Effect,
    Rule,
    check_categories,
    check_drops,
    check_epochs,
    check_name,
    check_normalizers,
    rules,
    setting,
)

# Every setting, declared once: default, help, what a change redoes (``Effect``) and its bounds or
# choices. Validation, ``--set`` help, ``presets --show`` and docs/settings.md read these.
RUN, SCHEDULE, RUNTIME, ANALYSIS = Effect.RUN, Effect.SCHEDULE, Effect.RUNTIME, Effect.ANALYSIS
SEED = dict(minimum=0, maximum=SEED_LIMIT)


@dataclass
class ModelConfig:
    """The ``[model]`` settings: the network (EN or BN, width, stem, normalizers, the ratio
    heads' reduction). A trained run keeps them."""

    norm: str = setting(
        "en", "Exemplar Normalization or plain BatchNorm2d", effect=RUN, choices=choices.NORMS
    )
    width: int = setting(
        16,
        "channels of the stem (torchvision's resnet50 has 64)",
        effect=RUN,
        minimum=1,
        maximum=4096,
    )
    stem: str = setting(
        "small",
        "small: 3x3 conv, no max-pool; imagenet: 7x7/2 conv and max-pool",
        effect=RUN,
        choices=choices.STEMS,
    )
    stem_stride: int = setting(2, "stride of the small stem's conv", effect=RUN, minimum=1)
    normalizers: list[str] = setting(
        ["in", "ln", "bn"],
        "the EN layers' pool of normalizers, in order",
        effect=RUN,
        check=check_normalizers,
        check_text=f"distinct names from {', '.join(choices.NORMALIZERS)}",
    )
    reduction: int = setting(
        16, "the ratio sub-network's reduction: 2C -> C/reduction -> 1", effect=RUN, minimum=1
    )
    zero_init_residual: bool = setting(
        True, "the last norm's gamma of each block starts at 0", effect=RUN
    )
    sync_bn_stats: bool = setting(
        False, "all-reduce EN's BN statistics across processes (torchrun)", effect=RUN
    )


@dataclass
class DataConfig:
    """The ``[data]`` settings: the dataset, where it is, how many training images, their
    size and the loaders. A trained run keeps them, except where the data is
    (``root``) and how it is loaded."""

    dataset: str = setting(
        "fashion-mnist", "the training and held-out images", effect=RUN, choices=choices.DATASETS
    )
    root: str = setting(
        "", 'where the dataset is ("": the dataset\'s default location)', effect=RUNTIME
    )
    train_samples: int = setting(
        0,
        "training images: 0 = the whole split, else a seeded class-balanced subset",
        effect=RUN,
        minimum=0,
    )
    val_samples: int = setting(
        0,
        "held-out images scored after each epoch (0 = all; the last epoch always uses all)",
        effect=RUN,
        minimum=0,
    )
    image_size: int = setting(
        0,
        "image side: 0 = the dataset's own (28, 32, or 224 for image folders)",
        effect=RUN,
        minimum=0,
        maximum=4096,
    )
    augment: str = setting(
        "crop-flip",
        "training augmentation: none, flips, or random crops with padding and flips",
        effect=RUN,
        choices=choices.AUGMENTS,
    )
    download: bool = setting(
        False, "let torchvision download the dataset where no local copy exists", effect=RUN
    )
    num_workers: int = setting(0, "data-loading processes", effect=RUNTIME, minimum=0, maximum=1024)
    categories_file: str = setting(
        "",
        "a CSV or TOML file of (category, synset) overriding the built-in mapping",
        effect=RUN,
    )
    skip_bad_images: bool = setting(
        False, "image folders: leave out unreadable files instead of stopping", effect=RUN
    )


@dataclass
class TrainConfig:
    """The ``[train]`` settings: epochs, batch, the optimizer and learning-rate schedule, the
    seed, and where and how training runs. A resume may change the schedule and where it
    runs; the rest a trained run keeps."""

    epochs: int = setting(12, "epochs to train", effect=SCHEDULE, minimum=1, maximum=10_000)
    batch_size: int = setting(
        64,
        "the global batch (split across processes under torchrun)",
        effect=RUN,
        minimum=1,
        maximum=1_000_000,
    )
    lr: float = setting(0.02, "SGD's learning rate", effect=SCHEDULE, minimum=0)
    momentum: float = setting(0.9, "SGD's momentum", effect=SCHEDULE, minimum=0)
    weight_decay: float = setting(1e-4, "SGD's weight decay", effect=SCHEDULE, minimum=0)
    lr_drops: list[int] = setting(
        [6, 9],
        "epochs after which the learning rate is multiplied by lr_gamma",
        effect=SCHEDULE,
        check=check_drops,
        check_text="strictly increasing epoch numbers",
    )
    lr_gamma: float = setting(
        0.1, "the learning rate's factor at each drop", effect=SCHEDULE, minimum=0
    )
    warmup_epochs: int = setting(
        0, "epochs of linear learning-rate warm-up (per step)", effect=SCHEDULE, minimum=0
    )
    ratio_lr_mult: float = setting(
        10.0, "the EN ratio sub-network's learning-rate multiplier", effect=SCHEDULE, minimum=0
    )
    ratio_weight_decay: float = setting(
        0.0, "the EN ratio sub-network's weight decay", effect=SCHEDULE, minimum=0
    )
    seed: int = setting(0, "seeds the weights, the data order and augmentation", effect=RUN, **SEED)
    device: str = setting(
        "cpu",
        "cpu, cuda or cuda:N",
        effect=RUNTIME,
        check=choices.check_device,
        check_text="cpu, cuda or cuda:N",
    )
    amp: bool = setting(False, "bf16 autocast (EN statistics stay float32)", effect=RUNTIME)
    channels_last: bool = setting(False, "channels-last memory format", effect=RUNTIME)
    threads: int = setting(
        0, "torch's CPU threads (0 = torch's default)", effect=RUNTIME, minimum=0, maximum=4096
    )
    compile: bool = setting(False, "run the model under torch.compile", effect=RUNTIME)
    compile_en_layers: bool = setting(
        False,
        "compile the Python EN layer where the C++ kernel does not run (GPU, bf16, synced BN)",
        effect=RUNTIME,
    )


@dataclass
class AnalysisConfig:
    """The ``[analysis]`` settings: the evaluation images, t-SNE, the metrics, the WordNet
    comparison, the controls, resampling and the verdict's margins. They belong to an
    analysis of a run, not to the run: a named analysis has its own."""

    categories: list[str] = setting(
        [],
        "the evaluation categories ([] = all)",
        effect=ANALYSIS,
        check=check_categories,
        check_text="distinct names",
    )
    per_category: int = setting(
        50,
        "held-out images per category",
        effect=ANALYSIS,
        minimum=2,
        maximum=100_000,
        why="silhouette and k-NN need pairs",
    )
    subset_seed: int = setting(0, "chooses the evaluation images", effect=ANALYSIS, minimum=0)
    batch_size: int = setting(100, "images per forward pass of extract", effect=RUNTIME, minimum=1)
    epochs: list[int] = setting(
        [],
        "the checkpoints extract reads ([] = every one); changes no file already made",
        effect=ANALYSIS,
        check=check_epochs,
        check_text="epoch numbers",
    )
    scaling: str = setting(
        "zscore",
        "feature scaling of the ratio vectors before t-SNE and the metrics",
        effect=ANALYSIS,
        choices=choices.SCALINGS,
    )
    perplexity: float = setting(30.0, "t-SNE's perplexity", effect=ANALYSIS, positive=True)
    tsne_mode: str = setting(
        "aligned",
        "aligned: each epoch starts from the previous map; independent: each from PCA",
        effect=ANALYSIS,
        choices=choices.TSNE_MODES,
    )
    tsne_seed: int = setting(0, "t-SNE's random state", effect=ANALYSIS, **SEED)
    n_jobs: int = setting(1, "t-SNE's threads", effect=RUNTIME, minimum=1)
    knn: int = setting(5, "neighbours of the k-NN accuracy", effect=ANALYSIS, minimum=1)
    panels: list[int] = setting(
        [],
        "the t-SNE grid's epochs ([] = chosen like the paper's)",
        effect=ANALYSIS,
        check=check_epochs,
        check_text="epoch numbers",
    )
    wordnet_distance: str = setting(
        "wup",
        "the WordNet distance between categories",
        effect=ANALYSIS,
        choices=choices.WORDNET_DISTANCES,
    )
    cluster_distance: str = setting(
        "crossvalidated",
        "distance between category clusters: crossvalidated (unbiased squared distance "
        "between category means), centroid or pairwise",
        effect=ANALYSIS,
        choices=choices.CLUSTER_DISTANCES,
    )
    permutations: int = setting(
        999,
        "label permutations; Mantel relabelings above 10 categories (else all of them)",
        effect=ANALYSIS,
        minimum=1,
        maximum=1_000_000,
    )
    bootstrap: int = setting(
        200,
        "resamples of the images within categories for the tables' 95% intervals (0 = none)",
        effect=ANALYSIS,
        minimum=0,
        maximum=100_000,
    )
    bootstrap_seed: int = setting(
        0, "seeds every resample (intervals and verdict)", effect=ANALYSIS, **SEED
    )
    permutation_seed: int = setting(
        0, "seeds the label permutations and random relabelings", effect=ANALYSIS, **SEED
    )
    control_seed: int = setting(0, "seeds the random heads", effect=ANALYSIS, **SEED)
    random_heads: int = setting(
        199,
        "random heads the learned ratios are ranked among",
        effect=ANALYSIS,
        minimum=1,
        maximum=100_000,
    )
    verdict_bootstrap: int = setting(
        1999,
        "resamples behind each verdict row's interval and p-value",
        effect=ANALYSIS,
        minimum=1,
        maximum=1_000_000,
    )
    margin_knn: float = setting(
        0.02, "equivalence margin of k-NN accuracy differences", effect=ANALYSIS, positive=True
    )
    margin_r: float = setting(
        0.1, "equivalence margin of differences of correlations", effect=ANALYSIS, positive=True
    )
    formed_share: float = setting(
        0.9,
        "formed early: the share of the last epoch's clustering reached before the first drop",
        effect=ANALYSIS,
        positive=True,
        maximum=1,
    )


@dataclass
class Config:
    """A run's complete settings: its name and the four sections. ``load_config`` resolves
    them from defaults, a preset, a ``--config`` file and ``--set`` overrides."""

    name: str = setting(
        "run",
        "the run's name (the default run folder is runs/NAME)",
        effect=RUNTIME,
        check=check_name,
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def to_dict(self) -> dict[str, Any]:
        """The settings as nested plain values (what ``config.toml`` holds)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        """Settings from nested plain values (a parsed TOML file): unset keys keep their
        defaults; an unknown or ill-typed key raises ``UserError`` naming ``source``."""
        config = cls()
        _merge(config, values, source)
        return config


SECTION_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "analysis": AnalysisConfig,
}
SECTIONS = tuple(SECTION_TYPES)


def declared() -> dict[str, Rule]:
    """Every setting (``section.key``, and ``name``) and its rule, in declaration order."""
    out = {"name": rules(Config)["name"]}
    for section in SECTIONS:
        out.update({f"{section}.{k}": r for k, r in rules(SECTION_TYPES[section]).items()})
    return out


def value_of(config: Config, key: str):
    """The value of ``section.key`` (or ``name``) in ``config``."""
    section, _, name = key.rpartition(".")
    return getattr(getattr(config, section) if section else config, name)


def preset_names() -> list[str]:
    """The names of the packaged presets (``fashion-mnist``, ...), sorted."""
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


def _merge(config: Config, values: dict[str, Any], source: str) -> None:
    for section, entries in values.items():
        if section == "name":
            config.name = rules(Config)["name"].coerce(entries, f"{source}: name")
            continue
        if section not in SECTIONS:
            raise UserError(
                f"{source}: unknown section [{section}].{_close(section, sorted(SECTIONS))}"
            )
        if not isinstance(entries, dict):
            raise UserError(f"{source}: [{section}] must be a table of settings")
        target = getattr(config, section)
        declared = rules(target)
        for key, value in entries.items():
            if key not in declared:
                names = list(declared)
                raise UserError(f"{source}: unknown setting {section}.{key}.{_close(key, names)}")
            setattr(target, key, declared[key].coerce(value, f"{source}: {section}.{key}"))


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


def validate(config: Config) -> None:
    """Every setting against its declared rule (``rules.Rule``), so a bad value fails here and
    not an hour into a run; then k-NN against the evaluation samples, where they are known."""
    for key, rule in declared().items():
        rule.validate(key, value_of(config, key))
    categories = config.analysis.categories
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
    """Write ``config`` to ``path`` as TOML, atomically."""
    from ..core.io import atomic_write_bytes

    atomic_write_bytes(path, tomli_w.dumps(config.to_dict()).encode())


def read_config(path: Path) -> Config:
    """Read a ``config.toml`` (or any settings file of the same sections); unset keys keep
    their defaults."""
    text = read_text(path)
    return Config.from_dict(_read_toml(text, str(path)), str(path))


def save_analysis_settings(settings: AnalysisConfig, path: Path) -> None:
    """A named analysis's settings: an ``[analysis]`` table of their own."""
    from ..core.io import atomic_write_bytes

    atomic_write_bytes(path, tomli_w.dumps({"analysis": dataclasses.asdict(settings)}).encode())


def read_analysis_settings(path: Path) -> AnalysisConfig:
    """Read and validate a named analysis's ``analysis.toml``; returns its settings."""
    config = read_config(path)
    validate(config)
    return config.analysis
