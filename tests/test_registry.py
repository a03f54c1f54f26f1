"""One step, one place: the CLI and reproduce derived from the step registry, one result type,
the tables' vocabulary, settings declared once, and one place deciding what a change redoes."""

import json
import shutil
from fnmatch import fnmatch

import numpy as np
import pandas as pd
import pytest

from en_analysis import Run
from en_analysis.cli import build_parser, main
from en_analysis.cli.reference import REFERENCES
from en_analysis.core.errors import UserError
from en_analysis.core.io import write_csv
from en_analysis.pipeline.reproduce import reproduce
from en_analysis.pipeline.runner import resolve
from en_analysis.run.tables import Dims, Metric, Space, one, select, with_dims
from en_analysis.settings.config import Config, declared, load_config
from en_analysis.settings.rules import Effect
from en_analysis.steps import registry
from en_analysis.steps.changes import Changes
from en_analysis.steps.results import StepResult

from conftest import snapshot, tiny_config

FAST = ("analysis.bootstrap=20",)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    path = tmp_path_factory.mktemp("registry") / "run"
    summary = reproduce(tiny_config(*FAST), path, progress=False)
    return path, summary


@pytest.fixture
def run(tmp_path, reproduced):
    path = tmp_path / "run"
    shutil.copytree(reproduced[0], path)
    return path


# --- the registry and what is derived from it ------------------------------------------------


def test_every_registered_step_is_a_subcommand_with_its_options():
    commands = build_parser().commands
    assert [c for c in commands if c in registry.NAMES] == list(registry.NAMES)
    for step in registry.STEPS:
        flags = {f for a in commands[step.name]._actions for f in a.option_strings}
        assert {f for o in step.options for f in o.flags} <= flags, step.name
        assert ("--epochs" in flags) == bool(step.epochs), step.name
        assert {"--set", "--analysis", "--force", "--replace", "--quiet"} <= flags
        assert commands[step.name].description == step.help


def test_every_step_function_resolves():
    for step in registry.STEPS:
        for path in step.functions:
            assert callable(resolve(path)), path


def test_every_setting_a_step_reads_is_declared():
    assert {k for s in registry.STEPS for k in s.reads} <= set(declared())


def test_reproduce_runs_the_registered_steps_in_order(reproduced):
    _, summary = reproduced
    assert list(summary.steps) == ["train", *registry.NAMES]


def test_every_output_is_declared_by_the_step_that_made_it(reproduced):
    """Each file in provenance.json is an output a registered step declares, made from inputs
    it declares, recorded with exactly the settings it declares reading."""
    path, _ = reproduced
    records = json.loads((path / "provenance.json").read_text())
    assert records
    for output, record in records.items():
        step = registry.writing(output)
        assert step is not None, output
        for source in record["inputs"]:  # what it reads, or its own table (for its figure)
            patterns = (*step.inputs, *step.outputs)
            assert any(fnmatch(source, pattern) for pattern in patterns), (output, source)
        declared_keys = {k for k in record["settings"] if "." in k}
        assert declared_keys == set(step.reads), output


def test_each_steps_outputs_are_made_from_every_input_it_declares(reproduced):
    """The reverse: each input pattern a step declares is what some output of the step was
    recorded as made from (a declared input no output reads would redo the step for nothing)."""
    path, _ = reproduced
    records = json.loads((path / "provenance.json").read_text())
    used: dict[str, set[str]] = {}
    for output, record in records.items():
        step = registry.writing(output)
        for source in record["inputs"]:
            used.setdefault(step.name, set()).update(p for p in step.inputs if fnmatch(source, p))
    for step in registry.STEPS:
        if step.name in used:
            assert used[step.name] == set(step.inputs), step.name


def test_a_step_through_the_cli_reports_what_it_did(run, capsys):
    assert main(["metrics", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"up to date: {run / 'analysis' / 'clustering.csv'}" in out
    assert f"up to date: {run / 'figures' / 'clustering_dynamics.png'}" in out
    assert main(["embed", str(run), "--quiet"]) == 0
    assert f"embeddings: {run / 'embeddings'} (written: none; up to date: [0, 1, 2])" in (
        capsys.readouterr().out
    )


def toy(run, epochs=None, force=False) -> StepResult:
    """A new analysis step, all of it: one table made from the ratio files with the settings the
    step reads, recorded in provenance, returned as a StepResult."""
    epochs = epochs or run.extracted_epochs()
    path = run.files.table("toy.csv")

    def write() -> None:
        means = [float(run.ratios(e).ratios.mean()) for e in epochs]
        write_csv(path, pd.DataFrame({"epoch": epochs, "mean": means}))

    inputs = [run.files.ratio_file(e) for e in epochs]
    written = run.make([path], inputs, run.step_settings("toy"), write, force)
    return StepResult.of("toy", [path], written)


TOY = registry.Step(
    "toy",
    "a new analysis",
    ("test_registry:toy",),
    reads=("analysis.knn",),
    inputs=("ratios/epoch-*.npz",),
    outputs=("analysis/toy.csv",),
)


def test_a_new_step_is_its_module_and_one_registration(run, monkeypatch, capsys):
    """Registered, a step is a subcommand with its help, runs in reproduce after the others,
    records the settings it reads (a change to them redoes it) and is in the CLI reference."""
    from en_analysis.cli.reference import cli_markdown

    monkeypatch.setattr(registry, "STEPS", (*registry.STEPS, TOY))
    monkeypatch.setattr(registry, "NAMES", (*registry.NAMES, "toy"))
    assert build_parser().commands["toy"].description == "a new analysis"
    assert main(["toy", str(run)]) == 0
    assert f"wrote {run / 'analysis' / 'toy.csv'}" in capsys.readouterr().out
    summary = reproduce(tiny_config(*FAST), run, progress=False)
    assert list(summary.steps)[-1] == "toy" and summary.steps["toy"] == "up to date"
    assert Changes(Config(), load_config(overrides=["analysis.knn=3"])).redone[-1] == "toy"
    assert "## `en-analysis toy`" in cli_markdown()


# --- one result type -------------------------------------------------------------------------


def test_step_results_add_and_name_their_epochs(tmp_path):
    a = StepResult.of("metrics", [tmp_path / "analysis" / "clustering.csv"], True, table=1)
    b = StepResult.of("metrics", [tmp_path / "figures" / "c.png"], False, summary="s")
    both = a + b
    assert both.written == a.written and both.up_to_date == b.up_to_date
    assert both.outputs == [*a.written, *b.up_to_date] and both.table == 1 and both.summary == "s"
    epochs = StepResult("extract", [tmp_path / "epoch-002.npz", tmp_path / "pixels.npz"])
    assert epochs.written_epochs == [2] and epochs.up_to_date_epochs == []


def test_every_step_returns_a_step_result(run):
    r = Run(run)
    for step in registry.STEPS:
        for path in step.functions:
            result = resolve(path)(r)
            assert isinstance(result, StepResult) and result.step == step.name
            assert result.outputs and not result.written and result.seconds > 0


# --- the tables' vocabulary ----------------------------------------------------------------


def test_select_and_one_instead_of_masks(reproduced):
    table = Run(reproduced[0]).clustering()
    knn = select(table, space=Space.RATIOS, dims=Dims.HIGH, metric=Metric.KNN)
    mask = table[(table.space == "ratios") & (table.dims == "high") & (table.metric == "knn")]
    pd.testing.assert_frame_equal(knn, mask)
    assert one(knn, epoch=2).value == mask[mask.epoch == 2].value.iloc[0]
    both = select(table, metric=[Metric.SILHOUETTE, Metric.KNN], epoch=2, space=Space.PIXELS)
    assert set(both.metric) == {"silhouette", "knn"}
    with pytest.raises(KeyError):
        one(table, space="nowhere")


def test_a_space_has_one_name_in_every_table(reproduced):
    run = Run(reproduced[0])
    for table in (run.clustering(), run.wordnet()):
        assert set(table.space) == {s.value for s in Space}
        assert set(select(table, dims=Dims.MAP).space) == {"ratios"}


def test_an_old_wordnet_table_reads_with_its_dims():
    old = pd.DataFrame({"epoch": [1, 1, 1], "space": ["ratios", "ratios-2d", "pixels"], "x": 0})
    new = with_dims(old)
    assert list(new.columns) == ["epoch", "space", "dims", "x"]
    assert list(zip(new.space, new.dims)) == [
        ("ratios", "high"),
        ("ratios", "2d"),
        ("pixels", "high"),
    ]
    assert with_dims(new) is new


# --- settings declared once ------------------------------------------------------------------

BOUNDED = [(k, r) for k, r in declared().items() if r.maximum is not None and not r.positive]
CHOSEN = [(k, r) for k, r in declared().items() if r.choices is not None]


@pytest.mark.parametrize("key, rule", BOUNDED, ids=[k for k, _ in BOUNDED])
def test_a_declared_bound_is_what_validation_enforces(key, rule):
    value = int(rule.maximum)
    load_config(overrides=[f"{key}={value}"])
    with pytest.raises(UserError, match=f"{key} must be at most {value:,}"):
        load_config(overrides=[f"{key}={value + 1}"])


@pytest.mark.parametrize("key, rule", CHOSEN, ids=[k for k, _ in CHOSEN])
def test_a_declared_choice_is_what_validation_enforces(key, rule):
    for choice in rule.choices:
        load_config(overrides=[f"{key}={choice}"])
    with pytest.raises(UserError, match=f"{key} = 'nope' is not one of"):
        load_config(overrides=[f"{key}=nope"])


@pytest.mark.parametrize("key", [k for k in declared() if k != "name"])
def test_a_declared_type_is_what_validation_enforces(key):
    rule = declared()[key]
    wrong = "[1]" if rule.kind is not list else "1"
    with pytest.raises(UserError, match=f"{key} must be {rule.kind.__name__}"):
        load_config(overrides=[f"{key}={wrong}"])


def test_every_setting_is_declared_with_help_and_an_effect():
    for key, rule in declared().items():
        assert rule.help and rule.effect in Effect, key


def test_presets_show_lists_every_setting(capsys):
    assert main(["presets", "fashion-mnist", "--show"]) == 0
    out = capsys.readouterr().out
    assert all(f"{key} = " in out for key in declared())
    assert "train.lr_drops = [7, 10]" in out  # the preset's value
    assert (
        "analysis.bootstrap_seed = 0" in out
        and "re-analyse: metrics, wordnet, stability, ablate, verdict" in out
    )


def test_the_references_are_what_the_code_generates():
    """docs/settings.md and docs/cli.md: `make docs-reference` writes them again."""
    from en_analysis.cli.reference import DOCS

    for name, make in REFERENCES.items():
        assert (DOCS / name).read_text() == make(), f"docs/{name}: run make docs-reference"


# --- what a changed setting redoes -------------------------------------------------------------


def test_the_seeds_redo_only_what_they_seed():
    def redone(key: str, value) -> tuple[str, ...]:
        asked = load_config(overrides=[f"{key}={value}"])
        return Changes(Config(), asked).redone

    assert redone("analysis.bootstrap_seed", 1) == (
        "metrics",
        "wordnet",
        "stability",
        "ablate",
        "verdict",
    )
    assert redone("analysis.permutation_seed", 1) == ("metrics", "wordnet", "ablate", "verdict")
    assert redone("analysis.control_seed", 1) == (
        "metrics",
        "wordnet",
        "decode",
        "stability",
        "verdict",
    )
    assert redone("analysis.tsne_seed", 1) == ("embed",)  # and what reads the embeddings
    assert redone("analysis.n_jobs", 2) == () and redone("analysis.epochs", "[1]") == ()
    assert Changes(Config(), load_config(overrides=["model.width=8"])).retraining.key == (
        "model.width"
    )


def test_a_new_bootstrap_seed_redoes_the_tables_not_the_ratios_or_the_maps(run):
    before = snapshot(run)
    with pytest.raises(
        UserError,
        match=r"bootstrap_seed = 0 \(asked 1\).*--replace.*"
        r"redoes metrics, wordnet, stability, ablate, verdict",
    ):
        reproduce(tiny_config(*FAST, "analysis.bootstrap_seed=1"), run, progress=False)
    assert snapshot(run) == before
    summary = reproduce(
        tiny_config(*FAST, "analysis.bootstrap_seed=1"), run, progress=False, replace=True
    )
    up_to_date = {s for s, status in summary.steps.items() if status == "up to date"}
    assert up_to_date == {"train", "extract", "embed", "decode", "export", "plot"}
    # the explorer page shows the clustering table's numbers: it is redone with them
    redone = {"metrics", "wordnet", "stability", "ablate", "verdict", "explore"}
    assert set(summary.steps) - up_to_date == redone
    after = snapshot(run)
    for folder in ("ratios", "embeddings", "checkpoints"):
        assert {p: b for p, b in after.items() if folder in p.parts} == {
            p: b for p, b in before.items() if folder in p.parts
        }
    assert Run(run).config.analysis.bootstrap_seed == 1


def test_a_step_may_change_a_setting_that_redoes_nothing_it_made(run, capsys):
    """analysis.n_jobs (runtime) and analysis.epochs (chooses what extract reads) change no
    file: no refusal, no recomputation."""
    assert main(["embed", str(run), "--quiet", "--set", "analysis.n_jobs=2"]) == 0
    assert "written: none" in capsys.readouterr().out
    assert Run(run).config.analysis.n_jobs == 2


def test_an_old_run_with_only_the_tsne_seed_opens(run):
    """Run folders from before the seeds by purpose: their config has analysis.tsne_seed only;
    the other seeds are 0, as the one seed was."""
    text = (run / "config.toml").read_text()
    for seed in ("bootstrap_seed", "permutation_seed", "control_seed"):
        text = "\n".join(line for line in text.splitlines() if not line.startswith(seed))
    (run / "config.toml").write_text(text + "\n")
    a = Run(run).config.analysis
    assert (a.tsne_seed, a.bootstrap_seed, a.permutation_seed, a.control_seed) == (0, 0, 0, 0)
    assert np.isfinite(Run(run).clustering().value).any()
