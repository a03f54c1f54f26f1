"""The README's "What happens when..." table, through the CLI: one clear line, exit status 2,
no traceback, and nothing that existed before is changed."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from en_analysis.cli import main

from conftest import TINY, snapshot


def sets(*extra: str) -> list[str]:
    return [x for o in (*TINY, *extra) for x in ("--set", o)]


def image_folder(root, channels: int, classes=("n02111889", "n07873807", "n01930112")):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, (16, 16, 3) if channels == 3 else (16, 16))
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / c / f"{i}.png")
    return root


def run_cli(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # one error line (extract lists each failed checkpoint above it)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("en-analysis: error:")
    return err


def test_missing_data_folder(tmp_path, capsys):
    err = run_cli(
        [
            "train",
            "--out",
            str(tmp_path / "r"),
            *sets("data.dataset=fashion-mnist", "data.root=/nonexistent"),
        ],
        capsys,
    )
    assert "Fashion-MNIST not found" in err and "apt-get install dataset-fashion-mnist" in err


def test_image_folder_without_splits_or_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = run_cli(
        [
            "train",
            "--out",
            str(tmp_path / "r"),
            *sets("data.dataset=imagefolder", f"data.root={tmp_path / 'empty'}"),
        ],
        capsys,
    )
    assert "train/" in err and "val/ or test/" in err
    bad = tmp_path / "notimages"
    for split in ("train", "val"):
        (bad / split / "a").mkdir(parents=True)
        (bad / split / "a" / "x.txt").write_text("not an image")
    err = run_cli(
        [
            "train",
            "--out",
            str(tmp_path / "r2"),
            *sets("data.dataset=imagefolder", f"data.root={bad}"),
        ],
        capsys,
    )
    assert "notimages" in err


def test_a_step_cannot_swap_the_runs_data(tmp_path, trained_run, capsys):
    """Before: `extract --set data.dataset=...` analysed the run's checkpoints on other data
    (and only a channel mismatch stopped it); the data are the run's."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    folder = image_folder(tmp_path / "rgb", channels=3)
    before = snapshot(run)
    err = run_cli(
        [
            "extract",
            str(run),
            "--quiet",
            "--set",
            "data.dataset=imagefolder",
            "--set",
            f"data.root={folder}",
            "--set",
            "data.image_size=16",
            "--set",
            "analysis.per_category=2",
        ],
        capsys,
    )
    assert "--set data.dataset=imagefolder: a step changes analysis settings" in err
    assert snapshot(run) == before


def as_written_by_its_step(run, path) -> None:
    """Record a file's new content in the run's provenance as what its step wrote: the file a
    step would write with other data, not a hand edit (which every step refuses)."""
    from en_analysis.core.provenance import digest

    records = json.loads((run / "provenance.json").read_text())
    records[path.relative_to(run).as_posix()]["digest"] = digest(path)
    (run / "provenance.json").write_text(json.dumps(records))


def test_class_folders_that_are_not_wnids(tmp_path, run_copy, capsys):
    # a run whose categories have no synsets: the WordNet step says how to give them
    from en_analysis import Run

    run = Run(run_copy)
    r = run.ratios(2)
    path = run_copy / "ratios" / "epoch-002.npz"
    data = dict(np.load(path, allow_pickle=False))
    data["synsets"] = np.array(["", "", "", ""])
    data["categories"] = np.array(["cats", "dogs", "cars", "trees"])
    np.savez(path, **data)
    as_written_by_its_step(run_copy, path)
    err = run_cli(["wordnet", str(run_copy), "--epochs", "2"], capsys)
    assert "no WordNet synset" in err and "categories_file" in err
    assert r.epoch == 2


def test_unknown_categories_and_too_many_samples(run_copy, capsys):
    err = run_cli(
        ["extract", str(run_copy), "--force", "--set", "analysis.categories=['dgo', 'cat']"],
        capsys,
    )
    assert "Did you mean dog" in err
    err = run_cli(
        ["extract", str(run_copy), "--force", "--set", "analysis.per_category=500"], capsys
    )
    assert "has only" in err and "per_category" in err


def test_foreign_and_non_en_checkpoints(tmp_path, trained_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / "epoch-001.pt").write_bytes(b"PK\x03\x04 garbage")
    err = run_cli(["extract", str(run), "--quiet"], capsys)
    assert "epoch-001.pt" in err or "could not be extracted" in err
    assert (run / "ratios" / "epoch-002.npz").exists()  # the others were extracted
    bn = tmp_path / "bn"
    assert (
        main(["train", "--quiet", "--out", str(bn), *sets("model.norm=bn", "train.epochs=1")]) == 0
    )
    err = run_cli(["extract", str(bn), "--quiet"], capsys)
    assert "could not be extracted" in err


def test_missing_epochs_and_unknown_mapping_synset(run_copy, tmp_path, capsys):
    err = run_cli(["metrics", str(run_copy), "--epochs", "1,9"], capsys)
    assert "no ratios for epoch 9" in err
    mapping = tmp_path / "m.csv"
    mapping.write_text("category,synset\ndog,dgo.n.01\n")
    from en_analysis import Run
    from en_analysis.core.errors import UserError
    from en_analysis.data import build_datasets

    cfg = Run(run_copy).config.data
    cfg.categories_file = str(mapping)
    data = build_datasets(cfg)
    from en_analysis.data.wordnet import category_synsets

    with pytest.raises(UserError, match="unknown WordNet synset 'dgo.n.01'"):
        category_synsets(data.classes, data.synsets)


def test_output_folder_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file")
    err = run_cli(["train", "--quiet", "--out", str(blocker / "run"), *sets()], capsys)
    assert "cannot create" in err
    assert blocker.read_text() == "I am a file"


def test_unknown_preset_and_key(capsys):
    assert "Did you mean" in run_cli(["train", "--preset", "imagenet2"], capsys)
    assert "Did you mean batch_size" in run_cli(["train", "--set", "train.batchsize=3"], capsys)


def test_an_image_folder_of_wnids_trains_and_resolves(tmp_path):
    """The positive case: RGB PNGs in wnid folders train, extract and map to WordNet."""
    from en_analysis import Run
    from en_analysis.analysis.extract import extract
    from en_analysis.data.wordnet import category_synsets

    folder = image_folder(tmp_path / "imgs", channels=3)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--quiet",
                "--out",
                str(run),
                *sets(
                    "data.dataset=imagefolder",
                    f"data.root={folder}",
                    "data.image_size=16",
                    "train.batch_size=4",
                    "train.epochs=1",
                    "analysis.per_category=2",
                ),
            ]
        )
        == 0
    )
    assert extract(Run(run), progress=False).written_epochs == [0, 1]
    r = Run(run).ratios(1)
    assert r.categories == ["n01930112", "n02111889", "n07873807"]  # sorted folder names
    names = [s.name() for s in category_synsets(r.categories, r.synsets)]
    assert names == ["nematode.n.01", "samoyed.n.03", "pizza.n.01"]


@pytest.mark.parametrize(
    "argv, needs",
    [
        (["export"], "extract"),
        (["export", "--projector"], "extract"),
        (["plot"], "embed"),
        (["explore"], "embed"),
        (["metrics"], "extract"),
        (["wordnet"], "extract"),
        (["embed"], "extract"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else v,
)
def test_analysis_steps_before_extract_name_the_step_to_run(
    tmp_path, trained_run, argv, needs, capsys
):
    """A trained run without ratios: each analysis step says which step to run first and
    writes nothing (export and plot ended in a traceback before)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = snapshot(run)
    err = run_cli([argv[0], str(run), *argv[1:]], capsys)
    assert f"en-analysis {needs} {run}" in err
    assert snapshot(run) == before


def _rewrite_npz(path, **changes):
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda r: dict(ratios=np.where(r["ratios"] > 0.3, np.nan, r["ratios"])),
            "NaN or infinite",
        ),
        (lambda r: dict(labels=r["labels"] + 100), "labels outside its"),
    ],
    ids=["nan-ratios", "label-outside-categories"],
)
def test_ratio_files_with_impossible_values_are_refused(run_copy, change, message, capsys):
    """Before: NaN ratios were silently turned into 0, and an unknown label became a class."""
    path = run_copy / "ratios" / "epoch-002.npz"
    with np.load(path) as d:
        _rewrite_npz(path, **change({k: d[k] for k in d.files}))
    as_written_by_its_step(run_copy, path)  # as if extract had written them
    err = run_cli(["metrics", str(run_copy)], capsys)
    assert "epoch-002.npz" in err and message in err


def test_duplicate_and_unordered_epochs_count_once(run_copy, capsys):
    """Before: --epochs 2,1,2 duplicated rows and measured centroid shifts between wrong epochs."""
    import pandas as pd

    assert main(["metrics", str(run_copy), "--epochs", "2,1,2"]) == 0
    messy = pd.read_csv(run_copy / "analysis" / "clustering.csv")
    assert main(["metrics", str(run_copy), "--epochs", "1,2"]) == 0
    clean = pd.read_csv(run_copy / "analysis" / "clustering.csv")
    pd.testing.assert_frame_equal(messy, clean)
    capsys.readouterr()


@pytest.mark.parametrize(
    "setting, message",
    [
        ('analysis.categories=["0", "1", "0"]', "lists 0 more than once"),
        ("analysis.per_category=1", "at least 2"),
        ("train.epochs=1000000000", "at most 10,000"),
        ("train.lr_drops=[1, 1]", "train.lr_drops must be strictly increasing"),
        ("train.seed=4294967296", "train.seed must be at most 4,294,967,295"),
        ("analysis.tsne_seed=4294967296", "analysis.tsne_seed must be at most 4,294,967,295"),
        ("train.device=tpu", "train.device must be cpu or cuda (or cuda:N), got 'tpu'"),
        ("train.threads=1000000", "train.threads must be at most 4,096"),
        ("data.num_workers=1000000", "data.num_workers must be at most 1,024"),
        ("data.image_size=1000000", "data.image_size must be at most 4,096"),
    ],
)
def test_settings_that_would_give_wrong_numbers_or_absurd_runs(tmp_path, setting, message, capsys):
    err = run_cli(["train", "--out", str(tmp_path / "r"), *sets(setting)], capsys)
    assert message in err
    assert not (tmp_path / "r").exists()


def test_a_name_is_not_a_path(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'name = "{tmp_path / "elsewhere"}"\n')
    err = run_cli(["train", "--config", str(config), *sets()], capsys)
    assert "must be a plain name" in err and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--device", "cuda"], "'cuda' was asked for but no CUDA device"),
        (["--device", "foo"], "--device must be cpu or cuda"),
        (["--batch-size", "-5"], "--batch-size must be at least 1"),
    ],
)
def test_extract_names_the_flag_the_user_typed(run_copy, argv, message, capsys):
    if "cuda" in argv and __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is available here")
    before = snapshot(run_copy)
    err = run_cli(["extract", str(run_copy), "--force", *argv], capsys)
    assert message in err and "train.device" not in err
    assert snapshot(run_copy) == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--categories", "Trousr"], "category 'Trousr' is not in this dataset"),
        (["--epochs", "99"], "epoch(s) [99] have no embedding; embedded: [0, 1, 2]"),
    ],
)
def test_plot_with_a_typo_names_what_exists(run_copy, argv, message, capsys):
    """Before: a ValueError traceback (categories) and a ZeroDivisionError (epochs)."""
    err = run_cli(["plot", str(run_copy), *argv], capsys)
    assert message in err
    assert not (run_copy / "figures").exists()


def test_a_new_run_never_overwrites_a_folder_it_did_not_start(tmp_path, analysed_run, capsys):
    """Before: a user's config.toml was replaced, and a deleted run's leftover ratios were then
    analysed as the new run's epoch 2."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text("[train]\nlr = 0.5\n")
    err = run_cli(["train", "--out", str(mine), *sets()], capsys)
    assert "holds the config.toml of another run (model.width = 16 (asked 4))" in err
    assert (mine / "config.toml").read_text() == "[train]\nlr = 0.5\n"
    leftover = tmp_path / "leftover"
    shutil.copytree(analysed_run, leftover)  # a deleted run's ratios and embeddings remain
    shutil.rmtree(leftover / "checkpoints")
    before = snapshot(leftover)
    for argv in (["train", "--out", str(leftover)], ["train", "--resume", "--out", str(leftover)]):
        err = run_cli([*argv, *sets()], capsys)
        assert (
            "already holds embeddings, provenance.json, ratios" in err
            and "choose another --out" in err
        )
    assert snapshot(leftover) == before


def test_nothing_is_written_before_every_check_passed(tmp_path, capsys):
    run = tmp_path / "run"
    run_cli(
        ["train", "--out", str(run), *sets("data.dataset=fashion-mnist", "data.root=/nope")], capsys
    )
    assert not (run / "config.toml").exists()


NOT_UTF8 = b"\xff\xfe\x00bad \x80\x81 bytes"


def test_a_config_file_that_is_not_text(tmp_path, capsys):
    bad = tmp_path / "settings.toml"
    bad.write_bytes(NOT_UTF8)
    err = run_cli(["train", "--config", str(bad), "--out", str(tmp_path / "run")], capsys)
    assert f"{bad} is not UTF-8 text" in err
    assert not (tmp_path / "run").exists()


def test_a_categories_file_that_is_not_text(tmp_path, capsys):
    bad = tmp_path / "synsets.csv"
    bad.write_bytes(NOT_UTF8)
    out = tmp_path / "run"
    err = run_cli(["train", "--out", str(out), *sets(f"data.categories_file={bad}")], capsys)
    assert f"{bad} is not UTF-8 text" in err
    assert not out.exists() or snapshot(out) == {}


def test_a_metrics_file_that_is_not_text(tmp_path, trained_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "metrics.csv").write_bytes(NOT_UTF8)
    before = snapshot(run)
    err = run_cli(["train", "--resume", "--out", str(run), *sets("train.epochs=3")], capsys)
    assert "metrics.csv is not UTF-8 text" in err
    assert snapshot(run) == before


def test_integer_category_names(run_copy, capsys):
    err = run_cli(["extract", str(run_copy), "--set", "analysis.categories=[1, 2]"], capsys)
    assert "analysis.categories must be names in quotes, e.g. ['1', '2']" in err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, analysed_run):
    """The tiny run with every output a step may replace (read-only: copy it)."""
    path = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(analysed_run, path)
    for argv in (["export"], ["metrics"], ["plot", "--no-animation"]):
        assert main([argv[0], str(path), *argv[1:]]) == 0
    return path


@pytest.mark.parametrize(
    "step, error",
    [
        ("export", errno.ENOSPC),
        ("export", errno.EROFS),
        ("export", errno.EDQUOT),
        ("metrics", errno.ENOSPC),
        ("plot", errno.ENOSPC),
        ("embed", errno.ENOSPC),
        ("extract", errno.ENOSPC),
    ],
)
def test_a_full_or_read_only_disk_while_writing(
    tmp_path, finished_run, monkeypatch, capsys, step, error
):
    """Before: an OSError traceback (and EROFS is not a PermissionError). Now one line, and
    every file that existed is as it was, with no temporary file left."""
    import en_analysis.core.io

    def fail(fd):
        raise OSError(error, os.strerror(error))

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    monkeypatch.setattr(en_analysis.core.io.os, "fsync", fail)
    err = run_cli([step, str(run), "--force"], capsys)
    assert os.strerror(error) in err and "its previous version is kept" in err
    assert snapshot(run) == before


def test_a_full_disk_while_training_keeps_the_earlier_epochs(
    tmp_path, trained_run, monkeypatch, capsys
):
    import en_analysis.core.io

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = snapshot(run)

    def fail(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(en_analysis.core.io.os, "fsync", fail)
    err = run_cli(["train", "--resume", "--out", str(run), *sets("train.epochs=3")], capsys)
    assert "No space left on device" in err
    assert snapshot(run) == before


def test_a_read_only_run_folder_for_the_lock(run_copy, monkeypatch, capsys):
    import en_analysis.core.io

    def fail(*args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    before = snapshot(run_copy)
    monkeypatch.setattr(en_analysis.core.io.os, "open", fail)
    err = run_cli(["metrics", str(run_copy)], capsys)
    assert f"cannot lock {run_copy}: Read-only file system" in err
    assert snapshot(run_copy) == before


def test_embeddings_of_other_images_or_deleted_while_plotting(run_copy, monkeypatch, capsys):
    """Before: a ZeroDivisionError or IndexError."""
    from en_analysis import Run

    before = snapshot(run_copy)
    # ratios extracted again for another subset: the old embeddings no longer fit them
    few = ["--analysis", "few", "--quiet"]
    assert main(["extract", str(run_copy), *few]) == 0
    assert main(["embed", str(run_copy), *few]) == 0
    again = ["--force", "--set", "analysis.per_category=4"]
    assert main(["extract", str(run_copy), *few, *again]) == 0
    err = run_cli(["metrics", str(run_copy), "--analysis", "few"], capsys)
    assert "the embedding of epoch 0 was made from other images than its ratios" in err
    assert "en-analysis embed" in err and "--analysis few" in err
    # an embedding that disappears after the epochs were listed
    shutil.rmtree(run_copy / "analyses")
    (run_copy / "embeddings" / "epoch-001.npz").unlink()
    monkeypatch.setattr(Run, "embedded_epochs", lambda self: [0, 1, 2])
    err = run_cli(["plot", str(run_copy), "--force"], capsys)
    assert "no embedding for epoch 1" in err
    del before[run_copy / "embeddings" / "epoch-001.npz"]
    assert {p: b for p, b in snapshot(run_copy).items() if "analyses" not in str(p)} == before


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    """Before: `--config FIFO` waited forever and `--config /dev/zero` grew by about 1 GB/s
    (here: a 5 GiB address-space limit, which the old code ran into)."""
    import resource

    if kind == "fifo":
        path = tmp_path / "settings.toml"
        os.mkfifo(path)
    else:
        path = "/dev/zero"

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (5 * 2**30, 5 * 2**30))

    out = subprocess.run(
        [sys.executable, "-m", "en_analysis", "train", "--config", str(path), "--out", "r"],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert out.returncode == 2, out.stderr[-500:]
    assert (
        out.stderr
        == f"en-analysis: error: {path} is not a regular file (a pipe, device or folder)\n"
    )
    assert not (tmp_path / "r").exists()


def test_a_text_input_larger_than_any_settings_file_or_table(tmp_path):
    from en_analysis.core.errors import UserError
    from en_analysis.core.io import MAX_TEXT_BYTES, read_text

    big = tmp_path / "big.toml"
    with open(big, "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)  # sparse: no disk space used
    with pytest.raises(UserError, match=r"big.toml is larger than 256 MiB"):
        read_text(big)


def test_a_resume_of_a_run_whose_config_is_missing(tmp_path, trained_run, capsys):
    """Before: a new run started in the folder, replaced epoch-000.pt and epoch-001.pt and left
    the old epoch-002.pt beside them."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "config.toml").unlink()
    before = snapshot(run)
    err = run_cli(["train", "--resume", "--quiet", "--out", str(run), *sets()], capsys)
    assert f"{run / 'config.toml'} is missing, but {run} holds checkpoints" in err
    assert snapshot(run) == before


def test_a_damaged_run_json_is_named_with_its_repair(tmp_path, trained_run, capsys):
    """Before: `--resume` made a new run id, after which `extract` refused every checkpoint of
    the run as another run's and advised removing them."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    identity = (run / "run.json").read_text()
    (run / "run.json").write_text(identity[: len(identity) // 2])  # truncated
    before = snapshot(run)
    repair = json.dumps({"id": json.loads(identity)["id"]})
    for argv in (
        ["train", "--resume", "--quiet", "--out", str(run), *sets("train.epochs=3")],
        ["extract", str(run), "--quiet"],
    ):
        err = run_cli(argv, capsys)
        assert f"{run / 'run.json'} is damaged" in err and f"write {repair} into it" in err
        assert len(err.strip().splitlines()) == 1
        assert snapshot(run) == before
    (run / "run.json").write_text(repair)  # the repair the message gives
    assert main(["extract", str(run), "--quiet"]) == 0


def test_a_step_refuses_an_input_changed_since_its_step_wrote_it(run_copy, capsys):
    """Before: the explorer page after a hand-edited clustering.csv, and `metrics` after a
    rewritten ratio file, gave numbers from the edited data (exit 0); only reproduce repaired
    them."""
    for step in ("metrics", "wordnet", "verdict"):
        assert main([step, str(run_copy)]) == 0
    table = run_copy / "analysis" / "clustering.csv"
    table.write_text(table.read_text().replace("0.", "0.9", 3))
    before = snapshot(run_copy)
    err = run_cli(["explore", str(run_copy), "--force"], capsys)  # its titles read the table
    assert f"{table} is not the file `en-analysis metrics` wrote (changed since)" in err
    assert f"run `en-analysis metrics {run_copy}`" in err
    ratios = run_copy / "ratios" / "epoch-001.npz"
    with np.load(ratios) as d:
        _rewrite_npz(ratios, ratios=d["ratios"][::-1].copy())
    for step in ("metrics", "embed", "export", "verdict"):
        err = run_cli([step, str(run_copy), "--force"], capsys)
        assert f"{ratios} is not the file `en-analysis extract` wrote" in err
    before[ratios] = ratios.read_bytes()
    assert snapshot(run_copy) == before
    # the steps named repair them
    assert main(["extract", str(run_copy), "--quiet"]) == 0
    assert main(["metrics", str(run_copy)]) == 0
    assert main(["verdict", str(run_copy)]) == 0
    capsys.readouterr()


def test_knn_that_leaves_too_few_samples(tmp_path, run_copy, capsys):
    """Before: sklearn's ValueError traceback from trustworthiness, after every earlier step."""
    err = run_cli(
        ["train", "--out", str(tmp_path / "r"), *sets('analysis.categories=["dog", "cat"]')]
        + ["--set", "analysis.knn=8"],
        capsys,
    )
    assert "analysis.knn = 8 must be less than half the 16 evaluation samples" in err
    before = snapshot(run_copy)  # the categories are the dataset's: known once extracted
    err = run_cli(["metrics", str(run_copy), "--set", "analysis.knn=16", "--force"], capsys)
    assert "analysis.knn = 16 must be less than half the 32 evaluation samples" in err
    assert snapshot(run_copy) == before


def test_an_analysis_name_with_a_trailing_newline(run_copy, capsys):
    err = run_cli(["metrics", str(run_copy), "--analysis", "raw\n"], capsys)
    assert "analysis name 'raw\\n' must be a plain name of 1 to 64 letters" in err
    assert not (run_copy / "analyses").exists()


def test_a_file_name_with_a_trailing_newline_is_no_epoch_file(tmp_path):
    """The same `$` let `epoch-002.pt\\n` pass for epoch 2's checkpoint."""
    from en_analysis.core.layout import epoch_files

    for name in ("epoch-001.pt", "epoch-002.pt\n"):
        (tmp_path / name).write_bytes(b"")
    assert list(epoch_files(tmp_path, ".pt")) == [1]


@pytest.mark.parametrize(
    "seeds, message",
    [
        ("1,1,2", "--seeds lists 1 more than once"),
        ("-1,1", "--seeds -1: train.seed must not be negative"),
        ("0,4294967296", "--seeds 4294967296: train.seed must be at most 4,294,967,295"),
    ],
)
def test_replicate_refuses_seeds_it_cannot_use(tmp_path, seeds, message, capsys):
    """Before: a seed listed twice was counted twice; negative seeds trained, then every later
    step refused them."""
    out = tmp_path / "reps"
    err = run_cli(["replicate", f"--seeds={seeds}", "--out", str(out), *sets()], capsys)
    assert message in err
    assert not out.exists()


def test_explore_never_writes_over_a_file_it_did_not_write(run_copy, tmp_path, capsys):
    """Before: `explore RUN --out RUN/metrics.csv` replaced the training log with the page."""
    mine = tmp_path / "notes.html"
    mine.write_text("<html>my notes</html>")
    before = snapshot(run_copy)
    for out, message in (
        (run_copy / "metrics.csv", "the explorer page is an HTML file"),
        (run_copy / "checkpoints" / "epoch-002.pt", "the explorer page is an HTML file"),
        (run_copy / "checkpoints" / "epoch-009.pt", "the explorer page is an HTML file"),
        (mine, "exists and is not an explorer page en-analysis wrote"),
    ):
        err = run_cli(["explore", str(run_copy), "--out", str(out)], capsys)
        assert message in err
    assert snapshot(run_copy) == before and mine.read_text() == "<html>my notes</html>"
    page = tmp_path / "page.html"
    for _ in range(2):  # a new page, then the page it wrote: replaced
        assert main(["explore", str(run_copy), "--out", str(page), "--epochs", "2"]) == 0
    capsys.readouterr()


def test_a_subset_larger_than_its_split_is_said_and_recorded(tmp_path):
    """Before: data.train_samples = 10**7 trained on the whole split, silently, and only the
    10**7 was stored."""
    folder = image_folder(tmp_path / "imgs", channels=3)
    out = tmp_path / "run"
    argv = ["train", "--quiet", "--out", str(out)]
    argv += sets("data.dataset=imagefolder", f"data.root={folder}", "train.epochs=1")
    argv += ["--set", "train.batch_size=4", "--set", "data.train_samples=10000000"]
    with pytest.warns(UserWarning, match="data.train_samples = 10,000,000 is more than the 12 "):
        assert main(argv) == 0
    assert json.loads((out / "run.json").read_text())["train_images"] == 12


@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist"])
def test_a_download_without_a_network_is_one_line(tmp_path, monkeypatch, dataset, capsys):
    """Before: a traceback (URLError for CIFAR-10, RuntimeError for Fashion-MNIST), and
    Fashion-MNIST's download went to the user cache instead of data.root."""
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    argv = ["train", "--quiet", "--out", str(tmp_path / "run")]
    argv += sets(f"data.dataset={dataset}", f"data.root={root}", "data.download=true")
    err = run_cli(argv, capsys)
    assert f"could not download {'CIFAR10' if dataset == 'cifar10' else 'Fashion-MNIST'} " in err
    assert f"into {root} (" in err and "Temporary failure in name resolution" in err
    if dataset == "fashion-mnist":  # torchvision's folder for it, in data.root
        assert (root / "FashionMNIST" / "raw").is_dir()


def _idx(path, array):
    """An IDX file (MNIST format) of uint8 ``array``."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_image_size_is_used_for_fashion_mnist(tmp_path):
    """Before: data.image_size was ignored for Fashion-MNIST and CIFAR, yet stored as used."""
    from en_analysis.data import build_datasets
    from en_analysis.settings.config import load_config

    rng = np.random.default_rng(0)
    labels = np.arange(40) % 10
    for split in ("train", "t10k"):
        _idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (40, 28, 28)))
        _idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    for size, side in ((0, 28), (20, 20), (32, 32)):
        config = load_config(
            "fashion-mnist", overrides=[f"data.root={tmp_path}", f"data.image_size={size}"]
        )
        data = build_datasets(config.data)
        assert data.image_size == side
        assert data.train[0][0].shape == data.heldout[0][0].shape == (1, side, side)


def test_a_step_with_another_data_root_is_not_the_runs_extraction(tmp_path, capsys):
    """Before: `extract RUN --set data.root=OTHER --force` extracted the checkpoints on other
    images, and later steps and reproduce took them for the run's. The images' fingerprint is
    part of what the ratios were made from; the same images elsewhere stay up to date."""
    from en_analysis import Run
    from en_analysis.analysis.extract import extract

    mine = image_folder(tmp_path / "mine", channels=3)
    other = tmp_path / "other"
    shutil.copytree(mine, other)
    image = other / "val" / "n02111889" / "0.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)  # other pixels, other size
    moved = tmp_path / "moved"
    shutil.copytree(mine, moved)
    run = tmp_path / "run"
    settings = ("data.dataset=imagefolder", f"data.root={mine}", "data.train_samples=0")
    argv = ["train", "--quiet", "--out", str(run)]
    argv += sets(*settings, "train.batch_size=4", "train.epochs=1", "analysis.per_category=2")
    assert main(argv) == 0
    assert extract(Run(run), progress=False).written_epochs == [0, 1]
    assert main(["extract", str(run), "--quiet", "--set", f"data.root={moved}"]) == 0
    assert "up to date: [0, 1]" in capsys.readouterr().out  # the same images, elsewhere
    assert main(["extract", str(run), "--quiet", "--set", f"data.root={other}", "--force"]) == 0
    capsys.readouterr()
    assert extract(Run(run), progress=False).written_epochs == [0, 1]  # the run's own images again
