"""Training and held-out datasets, built from the ``[data]`` settings.

Fashion-MNIST (the embedded default) is read from Debian's ``dataset-fashion-mnist`` IDX files;
CIFAR-10/100 and image folders come through torchvision. Class names and their WordNet synsets
are data (``tables/*.csv``), not code branches.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..core.errors import UserError
from ..settings.config import DataConfig
from .subset import balanced_subset

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
CACHE = Path.home() / ".cache" / "en-analysis"
STATS = {  # per-channel mean, std used to normalise inputs
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "synthetic": ((0.5,), (0.25,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class Datasets:
    """What training and analysis need to know about one dataset."""

    name: str
    train: Dataset  # with augmentation
    heldout: Dataset  # deterministic transforms
    train_labels: np.ndarray
    heldout_labels: np.ndarray
    classes: list[str]
    synsets: list[str]  # WordNet synset name per class ("" where none is known)
    in_channels: int
    image_size: int


class TensorImages(Dataset):
    """Images held in memory as uint8 (N, C, H, W), normalised (and augmented) per item."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, transform: v2.Transform) -> None:
        self.images = images
        self.labels = torch.tensor(np.asarray(labels), dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.labels[i])


def category_table(name: str) -> list[tuple[str, str]]:
    """The built-in (category, synset) rows of a dataset, in class-index order."""
    path = resources.files("en_analysis.data").joinpath("tables", f"{name}.csv")
    if not path.is_file():
        return []
    with path.open() as f:
        return [(row["category"], row["synset"]) for row in csv.DictReader(f)]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST format), gzip-compressed or not, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        ndim = data[3]
        shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError, IndexError) as e:
        raise UserError(f"{path} is not a readable IDX file ({e})") from None


def _find_idx(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for candidate in (folder / f"{stem}.gz", folder / stem, folder / "raw" / stem):
            if candidate.is_file():
                return candidate
    return None


FASHION_MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _fashion_mnist_root(cfg: DataConfig) -> Path:
    """Where a download goes: data.root, or the user cache when there is none."""
    return Path(cfg.root) if cfg.root else CACHE


def _fashion_mnist_files(cfg: DataConfig) -> list[Path | None]:
    """``FASHION_MNIST_FILES`` where they are found (None where not)."""
    folders = [Path(cfg.root)] if cfg.root else [Path(d) for d in FASHION_MNIST_DIRS]
    folders.append(_fashion_mnist_root(cfg) / "FashionMNIST" / "raw")  # torchvision's download
    return [_find_idx(folders, stem) for stem in FASHION_MNIST_FILES]


def _download(what: str, root: Path | str, download) -> None:
    """Call torchvision's ``download()``; a failure (no network, a server error, a bad
    checksum) is one line."""
    try:
        download()
    except (OSError, RuntimeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1][:200] if lines else type(e).__name__
        raise UserError(
            f"could not download {what} into {root} ({reason}); check the network, or put its "
            "files there and leave data.download=false"
        ) from None


def _fashion_mnist(cfg: DataConfig) -> tuple[np.ndarray, ...]:
    paths = _fashion_mnist_files(cfg)
    if None in paths and cfg.download:
        from torchvision.datasets import FashionMNIST

        root = _fashion_mnist_root(cfg)
        _download("Fashion-MNIST", root, lambda: FashionMNIST(str(root), download=True))
        paths = _fashion_mnist_files(cfg)
    if None in paths:
        folders = [cfg.root] if cfg.root else FASHION_MNIST_DIRS
        raise UserError(
            f"Fashion-MNIST not found in {', '.join(map(str, folders))}. Install it with "
            "`apt-get install dataset-fashion-mnist`, point data.root at a folder of its IDX "
            "files, or allow a download with data.download=true"
        )
    return tuple(read_idx(p) for p in paths)


def _cifar_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR100 if name == "cifar100" else CIFAR10


def _cifar_root(cfg: DataConfig) -> str:
    return cfg.root or str(CACHE / "cifar")


def _cifar(cfg: DataConfig) -> tuple[np.ndarray, ...]:
    cls = _cifar_class(cfg.dataset)
    root = _cifar_root(cfg)
    if cfg.download:
        _download(cls.__name__, root, lambda: cls(root, train=False, download=True))
    try:
        train = cls(root, train=True)
        test = cls(root, train=False)
    except RuntimeError as e:
        raise UserError(
            f"{cls.__name__} not found in {root} ({e}). Point data.root at it or allow a "
            "download with data.download=true"
        ) from None
    return (
        train.data.transpose(0, 3, 1, 2),
        np.asarray(train.targets),
        test.data.transpose(0, 3, 1, 2),
        np.asarray(test.targets),
        train.classes,
    )


def _synthetic(cfg: DataConfig, classes: list[str]) -> tuple[np.ndarray, ...]:
    """Class c = horizontal stripes of c + 1 cycles plus noise: learnable in a few steps, and
    unchanged by the flips and small shifts of augmentation. Tiny; for tests only."""
    size = cfg.image_size or 16
    rows = np.arange(size)[:, None] / size
    patterns = np.stack(
        [
            np.broadcast_to(128 + 90 * np.sin(2 * np.pi * (c + 1) * rows), (size, size))
            for c in range(len(classes))
        ]
    )[:, None]

    def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(seed)
        labels = np.arange(n) % len(classes)
        noise = r.normal(0, 40, (n, 1, size, size))
        return np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8), labels

    return (*make(cfg.train_samples or 256, 1), *make(max(cfg.val_samples, 128), 2))


def _tensor_transforms(
    mean, std, size: int, augment: str, own_size: int | None = None
) -> tuple[v2.Transform, v2.Transform]:
    """Training and held-out transforms of uint8 images of side ``own_size`` (None: ``size``),
    resized to ``size`` where that differs (``data.image_size``)."""
    resize = [v2.Resize((size, size), antialias=True)] if own_size not in (None, size) else []
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    crop = [v2.RandomCrop(size, padding=size // 8)] if augment == "crop-flip" else []
    train = resize + crop + ([v2.RandomHorizontalFlip()] if augment != "none" else [])
    return v2.Compose(train + to_float), v2.Compose(resize + to_float)


HELD_OUT_SPLITS = ("val", "test")  # the first that exists is the held-out split
DEFAULT_FOLDER_SIZE = 224  # image folders whose images differ in size (ImageNet)


class _FitTo:
    """Resize to 8/7 of ``size`` and centre-crop to ``size``, leaving images that already are
    ``size`` x ``size`` untouched (no upsampling, no cropped border)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.resize = v2.Compose([v2.Resize(size * 8 // 7), v2.CenterCrop(size)])

    def __call__(self, image):
        return image if image.size == (self.size, self.size) else self.resize(image)


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # "I" (32-bit) is read as 0..65535


def _values_problem(image) -> str | None:
    """Why the pixel values of a high-bit-depth image cannot be kept (None if they can)."""
    if image.mode not in (*SIXTEEN_BIT, "F"):
        return None
    a = np.asarray(image, dtype=np.float64)
    top = 1.0 if image.mode == "F" else 65535.0
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > top:
        return f"{image.mode} image with values outside 0..{top:g}"
    return None


def load_image(path: str):
    """An image file as 8-bit RGB with its values intact: 8-bit modes (L, P, 1, LA, RGBA,
    CMYK, YCbCr, LAB, ...) through PIL's conversion, 16-bit gray scaled by 255/65535 and 32-bit
    float gray (0..1) by 255 - PIL's own conversion would clip both to 255. Values that cannot be
    kept are refused by name."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        problem = _values_problem(image)
        if problem:
            raise UserError(f"{path}: {problem}; convert it to 8- or 16-bit")
        if image.mode in SIXTEEN_BIT or image.mode == "F":
            top = 1.0 if image.mode == "F" else 65535.0
            gray = np.round(np.asarray(image, dtype=np.float64) * (255 / top)).astype(np.uint8)
            return Image.fromarray(gray).convert("RGB")
        return image.convert("RGB")


def _image_problem(path: str) -> str | None:
    """Why an image file cannot be used, from its header and its last bytes (pixels are decoded
    only for high-bit-depth images, to check their range): empty, not an image PIL knows, a
    JPEG / PNG cut short (no end marker), values that cannot be kept. None if fine."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    try:
        size = p.stat().st_size
        if size == 0:
            return "empty file"
        with Image.open(p) as image:
            kind = image.format
            values = _values_problem(image)
        if values:
            return values
        with open(p, "rb") as f:
            f.seek(max(0, size - 12))
            tail = f.read()
    except UnidentifiedImageError:
        return "not an image"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if kind == "JPEG" and not tail.rstrip(b"\0").endswith(b"\xff\xd9"):
        return "truncated JPEG"
    if kind == "PNG" and b"IEND" not in tail:
        return "truncated PNG"
    return None


def _bad_images(folder, label: str, progress_from: int = 2000) -> list[tuple[str, str]]:
    """The unusable files of an ``ImageFolder`` and why (headers and end markers, 8 threads, a
    progress bar for big folders)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    paths = [p for p, _ in folder.samples]
    with ThreadPoolExecutor(8) as pool:
        problems = pool.map(_image_problem, paths)
        bar = tqdm(
            problems,
            total=len(paths),
            desc=f"checking {label}",
            unit="image",
            disable=len(paths) < progress_from,
        )
        return [(p, why) for p, why in zip(paths, bar) if why]


def _check_images(splits: dict, root: Path, skip: bool) -> None:
    """Every file checked before training: one line naming the bad ones (all splits), or, with
    ``skip``, the folders without them."""
    bad = {split: _bad_images(folder, split) for split, folder in splits.items()}
    every = [(p, why) for found in bad.values() for p, why in found]
    if every and not skip:
        named = "; ".join(f"{Path(p).relative_to(root)} ({why})" for p, why in every[:5])
        more = f" and {len(every) - 5} more" if len(every) > 5 else ""
        raise UserError(
            f"{len(every)} unusable image file(s) in {root}: {named}{more}. Remove or replace "
            "them, or set data.skip_bad_images=true to leave them out"
        )
    for split, found in bad.items():
        dropped = {p for p, _ in found}
        folder = splits[split]
        folder.samples = folder.imgs = [s for s in folder.samples if s[0] not in dropped]
        folder.targets = [t for _, t in folder.samples]


def _own_size(samples: list[tuple[str, int]], probe: int = 200) -> int | None:
    """The side of the folder's images if the probed ones (spread over the folder) are all
    squares of one size, else None. Reads image headers only."""
    from PIL import Image

    step = max(1, len(samples) // probe)
    sizes = set()
    for path, _ in samples[::step]:
        try:
            with Image.open(path) as image:
                sizes.add(image.size)
        except OSError as e:
            raise UserError(f"{path} is not a readable image: {e}") from None
        if len(sizes) > 1:
            return None
    (w, h) = sizes.pop()
    return w if w == h else None


def _image_folder(cfg: DataConfig) -> Datasets:
    from torchvision.datasets import ImageFolder

    if not cfg.root:
        raise UserError(
            "data.dataset = 'imagefolder' needs data.root (a folder with train/ and val/ or test/)"
        )
    root = Path(cfg.root)
    held_out = next((s for s in HELD_OUT_SPLITS if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or held_out is None:
        raise UserError(
            f"{root} needs a train/ folder and a held-out folder named val/ or test/, each with "
            "one folder of images per class"
        )
    splits = {}
    for split in ("train", held_out):
        try:
            splits[split] = ImageFolder(str(root / split), loader=load_image)
        except (FileNotFoundError, RuntimeError) as e:
            raise UserError(f"{root / split}: {e}") from None
    train, val = splits["train"], splits[held_out]
    _check_images(splits, root, cfg.skip_bad_images)
    if train.classes != val.classes:
        raise UserError(f"{root}: train/ and {held_out}/ have different class folders")
    size = cfg.image_size or _own_size(train.samples) or DEFAULT_FOLDER_SIZE
    mean, std = STATS["imagefolder"]
    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    flip = [v2.RandomHorizontalFlip()] if cfg.augment != "none" else []
    crop = [v2.RandomResizedCrop(size)] if cfg.augment == "crop-flip" else [_FitTo(size)]
    train.transform = v2.Compose(crop + flip + tail)
    val.transform = v2.Compose([_FitTo(size), *tail])
    table = dict(_user_table(cfg))
    synsets = [table.get(c, "") for c in train.classes]
    return Datasets(
        "imagefolder",
        _subset(train, np.asarray(train.targets), cfg.train_samples, 0),
        val,
        _labels_of(train.targets, cfg.train_samples),
        np.asarray(val.targets),
        list(train.classes),
        synsets,
        3,
        size,
    )


def _labels_of(targets, n: int) -> np.ndarray:
    labels = np.asarray(targets)
    return labels[balanced_subset(labels, n, 0)]


def _subset(ds: Dataset, labels: np.ndarray, n: int, seed: int) -> Dataset:
    from torch.utils.data import Subset

    idx = balanced_subset(labels, n, seed)
    return ds if len(idx) == len(labels) else Subset(ds, idx.tolist())


def _user_table(cfg: DataConfig) -> list[tuple[str, str]]:
    if not cfg.categories_file:
        return []
    from .mapping import read_mapping_file

    return list(read_mapping_file(Path(cfg.categories_file)).items())


def heldout_fingerprint(cfg: DataConfig) -> str:
    """A digest of the held-out images the ``[data]`` settings point at, from their files
    (the IDX or CIFAR test files; an image folder's held-out file names and sizes), without
    reading the images: the same data give the same fingerprint wherever they lie, other data
    another one. Empty where the files are missing; the settings alone make synthetic data."""
    from ..core.provenance import digest

    if cfg.dataset == "fashion-mnist":
        files = [p for p in _fashion_mnist_files(cfg)[2:] if p is not None]
        parts = [digest(p) for p in files]
    elif cfg.dataset in ("cifar10", "cifar100"):
        cls = _cifar_class(cfg.dataset)
        folder = Path(_cifar_root(cfg)) / cls.base_folder
        names = [name for name, _ in cls.test_list] + [cls.meta["filename"]]
        parts = [digest(folder / n) for n in names if (folder / n).is_file()]
    elif cfg.dataset == "imagefolder" and cfg.root:
        root = Path(cfg.root)
        split = next((s for s in HELD_OUT_SPLITS if (root / s).is_dir()), None)
        files = sorted(p for p in (root / split).rglob("*") if p.is_file()) if split else []
        parts = [split or ""] + [f"{p.relative_to(root)} {p.stat().st_size}" for p in files]
    else:
        return ""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest() if parts else ""


DATASET_NAMES = {
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "synthetic": "synthetic stripes",
}


def describe_data(cfg: DataConfig) -> str:
    """The data in words: the dataset's name, or an image folder's own name."""
    if cfg.dataset == "imagefolder":
        return f"image folder {Path(cfg.root).name}" if cfg.root else "image folder"
    return DATASET_NAMES.get(cfg.dataset, cfg.dataset)


def build_datasets(cfg: DataConfig) -> Datasets:
    """The datasets a ``[data]`` section names; ``train_samples`` subsets the training split."""
    if cfg.dataset == "imagefolder":
        return _image_folder(cfg)
    table = category_table(cfg.dataset)
    if cfg.dataset == "fashion-mnist":
        xtr, ytr, xte, yte = _fashion_mnist(cfg)
        xtr, xte = xtr[:, None], xte[:, None]
        classes = [c for c, _ in table]
    elif cfg.dataset in ("cifar10", "cifar100"):
        xtr, ytr, xte, yte, classes = _cifar(cfg)
    else:
        classes = [c for c, _ in table]
        xtr, ytr, xte, yte = _synthetic(cfg, classes)
    mapping = dict(table) | dict(_user_table(cfg))
    synsets = [mapping.get(c, "") for c in classes]
    keep = balanced_subset(ytr, cfg.train_samples, 0)
    size = cfg.image_size or xtr.shape[-1]
    mean, std = STATS[cfg.dataset]
    train_tf, test_tf = _tensor_transforms(mean, std, size, cfg.augment, xtr.shape[-1])
    return Datasets(
        cfg.dataset,
        TensorImages(torch.from_numpy(np.array(xtr[keep])), ytr[keep], train_tf),
        TensorImages(torch.from_numpy(np.array(xte)), yte, test_tf),
        np.asarray(ytr[keep]),
        np.asarray(yte),
        list(classes),
        synsets,
        xtr.shape[1],
        size,
    )


def thumbnail_images(cfg: DataConfig, sample_index: np.ndarray, side: int) -> np.ndarray:
    """Held-out images as uint8 (N, S, S) or (N, S, S, 3) arrays, S <= ``side``, contrast
    stretched per image (the data are normalized tensors; this undoes any mean/std): the
    explorer's and the projector's thumbnails."""
    from PIL import Image

    data = build_datasets(cfg)
    out = []
    for i in sample_index:
        x = data.heldout[int(i)][0].float()
        x = (x - x.min()) / (x.max() - x.min() + 1e-12)
        a = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
        if max(image.size) > side:
            image = image.resize((side, side), Image.Resampling.BILINEAR)
        out.append(np.asarray(image))
    return np.stack(out)
