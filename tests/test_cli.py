"""The CLI: every step has --help; user mistakes end in one line and exit status 2."""

import subprocess
import sys

import pytest

from en_analysis.cli import build_parser, main

STEPS = [
    "train",
    "extract",
    "export",
    "embed",
    "plot",
    "metrics",
    "wordnet",
    "reproduce",
    "presets",
    "explore",
    "verdict",
    "replicate",
    "compare",
]


@pytest.mark.parametrize("step", STEPS)
def test_every_step_has_help(step, capsys):
    with pytest.raises(SystemExit) as e:
        main([step, "--help"])
    assert e.value.code == 0 and "usage: en-analysis" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "fashion-mnst"], "Did you mean fashion-mnist"),
        (["train", "--set", "train.epoch=2"], "Did you mean epochs"),
        (["extract", "/nonexistent/run"], "not a run folder"),
        (["metrics", "/nonexistent/run"], "not a run folder"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_console_entry_point_and_debug_flag(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "en_analysis", "extract", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and out.stderr.startswith("en-analysis: error:")
    out = subprocess.run(
        [sys.executable, "-m", "en_analysis", "--debug", "extract", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_presets_listing(capsys):
    assert main(["presets"]) == 0
    assert "fashion-mnist-quick" in capsys.readouterr().out
    assert main(["presets", "imagenet"]) == 0
    assert "lr_drops = [" in capsys.readouterr().out


def test_steps_on_a_run(run_copy, capsys):
    assert main(["extract", str(run_copy), "--quiet"]) == 0
    assert "up to date: [0, 1, 2]" in capsys.readouterr().out
    assert main(["metrics", str(run_copy)]) == 0
    assert (run_copy / "analysis" / "clustering.csv").exists()
    assert main(["plot", str(run_copy), "--no-animation"]) == 0
    assert (run_copy / "figures" / "tsne_grid.png").exists()
    assert main(["wordnet", str(run_copy)]) == 0
    assert "closest" in capsys.readouterr().out
    assert main(["export", str(run_copy), "--wide"]) == 0
    assert main(["metrics", str(run_copy)]) == 0  # a second time: nothing to do
    assert "up to date: " + str(run_copy / "analysis" / "clustering.csv") in capsys.readouterr().out


def test_parser_lists_all_steps():
    text = build_parser().format_help()
    assert all(step in text for step in STEPS)
