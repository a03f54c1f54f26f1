"""The CLI: every step has --help (its own --epochs help), cheap to build; user mistakes end in
one line and exit status 2; the global options go before or after the command; --version;
--quiet hides the progress bars."""

import inspect
import subprocess
import sys

import pytest

from en_analysis.cli import build_parser, main
from en_analysis.core.errors import UserError
from en_analysis.steps import registry

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


HEAVY = ("torch", "pandas", "sklearn", "matplotlib", "openTSNE", "scipy", "plotly")


def test_help_and_version_import_no_heavy_library():
    """``import en_analysis``, its names listed, the parser built and ``--help`` and
    ``--version`` printed: none of torch, pandas, scikit-learn, matplotlib, openTSNE, scipy,
    plotly is imported (a property, not a timing: ``--help`` stays fast)."""
    script = (
        "import sys, contextlib, io\n"
        "import en_analysis, en_analysis.cli\n"
        "dir(en_analysis); en_analysis.__version__\n"
        "for argv in (['--help'], ['extract', '--help'], ['plot', '--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        en_analysis.cli.main(argv)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version(capsys):
    import en_analysis

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"en-analysis {en_analysis.__version__}"
    out = subprocess.run(
        [sys.executable, "-m", "en_analysis", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("en-analysis 0.")


@pytest.mark.parametrize(
    "argv, debug, quiet",
    [
        (["--debug", "extract", "RUN"], True, False),
        (["extract", "RUN", "--debug"], True, False),
        (["--quiet", "extract", "RUN"], False, True),
        (["extract", "RUN", "--quiet"], False, True),
        (["--debug", "embed", "--quiet", "RUN"], True, True),
        (["extract", "RUN"], False, False),
        (["--quiet", "reproduce"], False, True),
        (["reproduce", "--quiet"], False, True),
        (["train", "--debug"], True, False),
        (["--debug", "presets"], True, False),
        (["presets", "--debug"], True, False),
        (["compare", "A", "--out", "B", "--debug"], True, False),
    ],
)
def test_global_options_before_or_after_the_command(argv, debug, quiet):
    args = build_parser().parse_args(argv)
    assert (args.debug, args.quiet) == (debug, quiet)


@pytest.mark.parametrize("before", [True, False])
def test_debug_after_the_command_shows_the_traceback(tmp_path, before):
    argv = ["extract", str(tmp_path)]
    argv = ["--debug", *argv] if before else [*argv, "--debug"]
    with pytest.raises(UserError, match="not a run folder"):
        main(argv)


def _epochs_help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("step", registry.STEPS, ids=registry.NAMES)
def test_epochs_help_is_the_steps_own(step, capsys):
    text = _epochs_help(step.name, capsys)
    if step.epochs:
        assert f"--epochs EPOCHS comma-separated: {step.epochs}" in text
    else:
        assert "--epochs" not in text


def test_epochs_help_of_plot_and_verdict(capsys):
    assert "the t-SNE grid's panels (default: analysis.panels" in _epochs_help("plot", capsys)
    assert "--epochs" not in _epochs_help("verdict", capsys)  # the claims name their epochs


PROGRESS = ("metrics", "wordnet", "decode", "stability", "ablate", "verdict", "extract", "embed")


@pytest.mark.parametrize("name", PROGRESS)
def test_slow_steps_take_progress(name):
    """``run_step`` passes ``progress`` (False under --quiet) to the functions that name it:
    every step that takes more than a few seconds on the default run has a bar."""
    from en_analysis.pipeline.runner import resolve

    step = registry.step(name)
    takes = [inspect.signature(resolve(f)).parameters.get("progress") for f in step.functions]
    assert any(p is not None and p.default is True for p in takes)


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
def test_quiet_hides_the_progress_bar(run_copy, capsys, quiet):
    assert main([*quiet, "decode", str(run_copy)]) == 0
    err = capsys.readouterr().err
    assert ("decode: 100%" in err) == (not quiet)
