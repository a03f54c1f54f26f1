"""Image folders: train/ with val/ or test/, their own image size, untouched evaluation images."""

import numpy as np
import pytest
import torch
from PIL import Image

from en_analysis.core.errors import UserError
from en_analysis.data import build_datasets
from en_analysis.data.datasets import STATS
from en_analysis.settings.config import load_config

from conftest import TINY


def folder(root, held_out="test", sizes=((32, 32),), classes=("airplane", "cat")):
    rng = np.random.default_rng(0)
    for split in ("train", held_out):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                w, h = sizes[i % len(sizes)]
                pixels = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def config(root, *extra):
    base = [o for o in TINY if not o.startswith("data.image_size")]
    return load_config(None, None, [*base, "data.dataset=imagefolder", f"data.root={root}", *extra])


def test_train_and_test_folders_at_their_own_size(tmp_path):
    root = folder(tmp_path / "cifar-like")
    data = build_datasets(config(root).data)
    assert data.image_size == 32 and data.classes == ["airplane", "cat"]
    x, label = data.heldout[0]
    assert x.shape == (3, 32, 32)
    # the evaluation image is the file itself, normalised: not resized, not cropped
    path, _ = data.heldout.samples[0]
    mean, std = STATS["imagefolder"]
    expected = torch.tensor(np.asarray(Image.open(path)), dtype=torch.float32).permute(2, 0, 1)
    expected = (expected / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[
        :, None, None
    ]
    torch.testing.assert_close(x, expected)


def test_images_of_varied_sizes_default_to_224(tmp_path):
    root = folder(tmp_path / "varied", held_out="val", sizes=((40, 30), (64, 64)))
    data = build_datasets(config(root).data)
    assert data.image_size == 224
    assert data.heldout[0][0].shape == (3, 224, 224)


def test_an_explicit_size_wins(tmp_path):
    data = build_datasets(config(folder(tmp_path / "f"), "data.image_size=24").data)
    assert data.image_size == 24 and data.heldout[0][0].shape == (3, 24, 24)


def test_a_folder_without_a_held_out_split_names_both_names(tmp_path):
    root = folder(tmp_path / "f")
    (root / "test").rename(root / "holdout")
    with pytest.raises(UserError, match=r"val/ or test/"):
        build_datasets(config(root).data)


def test_training_says_the_size_it_uses(tmp_path, capsys):
    from en_analysis.training.train import train

    root = folder(tmp_path / "f")
    train(config(root, "train.epochs=1", "train.batch_size=4"), tmp_path / "run", progress=True)
    assert "imagefolder, 2 classes, 8 training images at 32 x 32" in capsys.readouterr().out


@pytest.mark.parametrize("augment", ["none", "flip", "crop-flip"])
def test_every_augmentation_mode(augment):
    """none: the training image is the evaluation one; flip: it or its mirror, both seen;
    crop-flip: also shifted copies. The evaluation transform never changes the image."""
    from en_analysis.data.datasets import _tensor_transforms

    torch.manual_seed(0)
    image = torch.arange(64, dtype=torch.uint8).reshape(1, 8, 8) * 3  # no symmetry
    train, test = _tensor_transforms((0.5,), (0.25,), 8, augment)
    plain = test(image)
    seen = [train(image) for _ in range(60)]
    mirrored = plain.flip(-1)
    kinds = {
        "plain": any(torch.equal(s, plain) for s in seen),
        "mirrored": any(torch.equal(s, mirrored) for s in seen),
        "shifted": any(not torch.equal(s, plain) and not torch.equal(s, mirrored) for s in seen),
    }
    expected = {
        "none": {"plain": True, "mirrored": False, "shifted": False},
        "flip": {"plain": True, "mirrored": True, "shifted": False},
        "crop-flip": {"plain": True, "mirrored": True, "shifted": True},
    }[augment]
    assert kinds == expected
    assert all(s.shape == plain.shape for s in seen)
    assert torch.equal(test(image), plain)


def test_unusable_image_files_are_named_before_training_or_skipped(tmp_path):
    """Random bytes named .jpg, a JPEG cut short and an empty file: one line naming each (before:
    an UnidentifiedImageError or OSError in the middle of an epoch); skip_bad_images leaves them
    out."""
    root = folder(tmp_path / "f")
    cat = root / "train" / "cat"
    (cat / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    Image.open(cat / "0.png").convert("RGB").save(cat / "whole.jpg", quality=90)
    whole = (cat / "whole.jpg").read_bytes()
    (cat / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "test" / "airplane" / "empty.png").write_bytes(b"")
    with pytest.raises(UserError) as refused:
        build_datasets(config(root).data)
    message = str(refused.value)
    assert message.startswith("3 unusable image file(s)")
    for name, why in (("noise.jpg", "not an image"), ("cut.jpg", "truncated JPEG")):
        assert f"train/cat/{name} ({why})" in message
    assert "test/airplane/empty.png (empty file)" in message and "skip_bad_images" in message
    data = build_datasets(config(root, "data.skip_bad_images=true").data)
    assert len(data.train) == 8 + 1  # the 8 PNGs and the whole JPEG
    assert len(data.heldout) == 8
    for i in range(len(data.train)):
        data.train[i]  # every remaining file loads


GRAY = np.array([[0, 1, 2, 64], [127, 128, 200, 255]], np.uint8)


def _saved(path, image, fmt):
    image.save(path, format=fmt)
    return path


def _expected_gray(values):
    return np.repeat(values[..., None], 3, axis=2)


@pytest.mark.parametrize(
    "mode, fmt, make, expected",
    [
        ("L", "PNG", lambda: Image.fromarray(GRAY), _expected_gray(GRAY)),
        ("L", "TIFF", lambda: Image.fromarray(GRAY), _expected_gray(GRAY)),
        ("1", "PNG", lambda: Image.fromarray(GRAY > 127), _expected_gray((GRAY > 127) * 255)),
        (
            "LA",
            "PNG",
            lambda: Image.fromarray(np.stack([GRAY, 255 - GRAY], 2), "LA"),
            _expected_gray(GRAY),
        ),
        (
            "P",
            "PNG",
            lambda: Image.fromarray(GRAY).convert("P"),  # a palette of the grays: exact
            _expected_gray(GRAY),
        ),
        (
            "RGBA",
            "PNG",
            lambda: Image.fromarray(np.stack([GRAY, 255 - GRAY, GRAY // 2, GRAY], 2), "RGBA"),
            np.stack([GRAY, 255 - GRAY, GRAY // 2], 2),  # alpha dropped, colours kept
        ),
        (
            "RGB",
            "BMP",
            lambda: Image.fromarray(np.stack([GRAY, 255 - GRAY, GRAY // 2], 2)),
            np.stack([GRAY, 255 - GRAY, GRAY // 2], 2),
        ),
        (
            "I;16",
            "PNG",  # 16-bit: PIL's own conversion clips every value above 255 to 255
            lambda: Image.fromarray(GRAY.astype(np.uint16) * 257),
            _expected_gray(GRAY),
        ),
        (
            "I;16",
            "TIFF",
            lambda: Image.fromarray(GRAY.astype(np.uint16) * 256 + 100),
            _expected_gray(np.round((GRAY * 256.0 + 100) / 257).astype(np.uint8)),
        ),
        (
            "I",
            "TIFF",  # 32-bit integers in the 16-bit range
            lambda: Image.fromarray(GRAY.astype(np.int32) * 257),
            _expected_gray(GRAY),
        ),
        (
            "F",
            "TIFF",  # 32-bit float in 0..1
            lambda: Image.fromarray((GRAY / 255).astype(np.float32)),
            _expected_gray(GRAY),
        ),
    ],
)
def test_every_image_mode_loads_with_its_values(tmp_path, mode, fmt, make, expected):
    from en_analysis.data.datasets import load_image

    image = make()
    path = _saved(tmp_path / f"image.{fmt.lower()}", image, fmt)
    with Image.open(path) as opened:
        assert opened.mode == mode  # the file really is of this mode
    loaded = load_image(str(path))
    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded), expected)


@pytest.mark.parametrize(
    "colour_mode, fmt", [("CMYK", "JPEG"), ("CMYK", "TIFF"), ("YCbCr", "TIFF"), ("LAB", "TIFF")]
)
def test_colour_spaces_load_through_pils_conversion(tmp_path, colour_mode, fmt):
    from en_analysis.data.datasets import load_image

    rgb = Image.fromarray(np.stack([GRAY, 255 - GRAY, GRAY // 2], 2))
    path = _saved(tmp_path / f"image.{fmt.lower()}", rgb.convert(colour_mode), fmt)
    with Image.open(path) as opened:
        assert opened.mode == colour_mode
        reference = np.asarray(opened.convert("RGB"))
    loaded = np.asarray(load_image(str(path)))
    np.testing.assert_array_equal(loaded, reference)
    assert loaded.std() > 10  # not flattened to one colour


@pytest.mark.parametrize(
    "make, why",
    [
        (
            lambda: Image.fromarray(np.full((4, 4), 2.5, np.float32)),
            "F image with values outside 0..1",
        ),
        (
            lambda: Image.fromarray(np.full((4, 4), 70000, np.int32)),
            "I image with values outside 0..65535",
        ),
    ],
)
def test_images_whose_values_cannot_be_kept_are_refused_by_name_before_training(
    tmp_path, make, why
):
    root = folder(tmp_path / "data")
    make().save(root / "train" / "cat" / "odd.tiff")
    with pytest.raises(UserError, match=rf"train/cat/odd.tiff \({why}\)"):
        build_datasets(config(root).data)
