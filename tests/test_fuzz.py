"""Generated settings and arguments: a config or a clean UserError, never a traceback."""

import math
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from en_analysis.cli import main
from en_analysis.core.errors import UserError
from en_analysis.settings.config import load_config, read_config, save_config

SECTIONS = ["model", "data", "train", "analysis", "trian", "x"]
KEYS = [
    "norm",
    "width",
    "stem",
    "epochs",
    "lr",
    "lr_drops",
    "batch_size",
    "dataset",
    "scaling",
    "perplexity",
    "categories",
    "per_category",
    "bogus",
    "warmup_epochs",
]
VALUES = st.one_of(
    st.integers(-5, 300).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(
        [
            "true",
            "[]",
            "[1, 2]",
            "[3, 1]",
            "'bn'",
            "en",
            "zscore",
            "'x'",
            "nan",
            "inf",
            "[",
            '"',
            "{}",
            "''",
        ]
    ),
    st.text(string.printable, max_size=12),
)
OVERRIDES = st.lists(
    st.builds(
        lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(SECTIONS), st.sampled_from(KEYS), VALUES
    )
    | st.text(string.printable, max_size=20),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(preset=st.sampled_from([None, "fashion-mnist", "imagenet", "nope"]), overrides=OVERRIDES)
def test_generated_configs_load_or_fail_cleanly(preset, overrides):
    try:
        config = load_config(preset, None, overrides)
    except UserError as e:
        assert str(e)
    else:
        assert config.train.epochs >= 1 and config.model.width >= 1
        assert math.isfinite(config.train.lr) and math.isfinite(config.analysis.perplexity)


@settings(max_examples=100, deadline=None)
@given(text=st.text(string.printable, max_size=200))
def test_generated_toml_files(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("cfg") / "c.toml"
    f.write_text(text)
    try:
        config = load_config(None, f)
    except UserError as e:
        assert str(e)
    else:  # a config that loads survives its own round trip through a file
        saved = tmp_path_factory.mktemp("saved") / "config.toml"
        save_config(config, saved)
        assert read_config(saved).to_dict() == config.to_dict()


@settings(max_examples=60, deadline=None)
@given(
    step=st.sampled_from(["train", "extract", "metrics", "wordnet", "export", "embed"]),
    overrides=OVERRIDES,
)
def test_generated_cli_calls_end_cleanly(step, overrides, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    argv = (
        [step, str(folder / "missing")] if step != "train" else [step, "--out", str(folder / "run")]
    )
    argv += [x for o in overrides for x in ("--set", o)]
    if step == "train":  # last, so that no generated train.epochs can start a real training
        argv += ["--set", "train.epochs=0"]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    assert code == 2
