"""Configuration: presets, files, overrides, and clear errors for every mistake."""

import pytest

from en_analysis.core.errors import UserError
from en_analysis.settings.config import Config, load_config, preset_names, read_config, save_config


def test_presets_exist_and_resolve():
    assert {"fashion-mnist", "fashion-mnist-quick", "imagenet", "paper-categories"} <= set(
        preset_names()
    )
    default = load_config("fashion-mnist")
    assert default.data.dataset == "fashion-mnist" and default.model.stem == "small"
    assert len(default.train.lr_drops) == 2  # two drops: "settles after the first drop"
    paper = load_config("imagenet")
    assert (paper.model.width, paper.model.stem, paper.train.epochs) == (64, "imagenet", 100)
    assert (paper.train.batch_size, paper.train.lr, paper.train.lr_drops) == (
        256,
        0.1,
        [30, 60, 90],
    )


def test_overrides_win_and_are_typed(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nepochs = 5\nlr = 1\n")
    c = load_config(
        "fashion-mnist", f, ["train.epochs=7", "analysis.scaling=raw", "train.lr_drops=[2, 4]"]
    )
    assert c.train.epochs == 7 and c.train.lr == 1.0 and isinstance(c.train.lr, float)
    assert c.analysis.scaling == "raw" and c.train.lr_drops == [2, 4]


@pytest.mark.parametrize(
    "args, message",
    [
        (("fashion-mnst",), "Did you mean fashion-mnist"),
        ((None, None, ["train.epoch=3"]), "Did you mean epochs"),
        ((None, None, ["trian.epochs=3"]), "Did you mean train"),
        ((None, None, ["train.epochs=three"]), "must be int"),
        ((None, None, ["train.epochs"]), "section.key=value"),
        ((None, None, ["model.norm=gn"]), "not one of"),
        ((None, None, ["train.epochs=0"]), "at least 1"),
        ((None, None, ["train.lr_drops=[5, 2]"]), "increasing"),
        ((None, "/nonexistent.toml"), "cannot read"),
    ],
)
def test_mistakes_are_clear_errors(args, message):
    with pytest.raises(UserError, match=message):
        load_config(*args)


def test_invalid_toml_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train\nepochs=")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(None, f)


def test_save_and_read_round_trip(tmp_path):
    c = load_config("fashion-mnist", None, ["analysis.categories=['Bag', 'Sandal']"])
    save_config(c, tmp_path / "config.toml")
    assert read_config(tmp_path / "config.toml") == c
    assert Config.from_dict(c.to_dict()) == c
