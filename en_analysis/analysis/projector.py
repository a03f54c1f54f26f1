"""TensorBoard Embedding Projector files of a run: no TensorBoard needed to write them.

``RUN/projector/`` gets, per epoch, ``epoch-XXX/tensor.tsv`` (one L*K ratio vector a row) and
``epoch-XXX/metadata.tsv`` (category, synset, prediction, sample index; a header row), one
``sprite.png`` of the evaluation images (the same samples in the same order every epoch) and
``projector_config.pbtxt``, the text-format ``ProjectorConfig`` the projector plugin reads from
the log directory: ``tensorboard --logdir RUN/projector``.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.errors import UserError
from ..core.io import atomic_write_bytes, atomic_write_text
from ..core.layout import epoch_file
from ..data import thumbnail_images
from ..run.folder import Ratios, RunFolder

SPRITE_SIDE = 28  # pixels per thumbnail in the sprite (the projector shows them small)
MAX_SPRITE = 8192  # the projector's limit on the sprite image's side


def metadata_tsv(r: Ratios) -> str:
    """The metadata table: a header row, then one row per sample (tabs in names replaced)."""
    predictions = r.predictions if r.predictions is not None else np.full(len(r.labels), -1)
    rows = ["category\tsynset\tprediction\tsample_index"]
    for label, predicted, sample in zip(r.labels, predictions, r.sample_index):
        fields = [
            r.categories[label],
            r.synsets[label],
            r.categories[predicted] if predicted >= 0 else "",
            str(int(sample)),
        ]
        rows.append("\t".join(f.replace("\t", " ") for f in fields))
    return "\n".join(rows) + "\n"


def tensor_tsv(r: Ratios) -> str:
    """One sample's L*K ratio vector per row, layer-major like ``Ratios.vectors``."""
    return "\n".join("\t".join(f"{v:.6g}" for v in row) for row in r.vectors) + "\n"


def sprite(images: np.ndarray) -> tuple[bytes, int]:
    """The images (N, S, S[, 3]) as one square PNG grid in row-major order, and S."""
    n, side = len(images), images.shape[1]
    cols = math.ceil(math.sqrt(n))
    if cols * side > MAX_SPRITE:
        raise UserError(f"{n} thumbnails of {side} px exceed the projector's {MAX_SPRITE} px")
    grid = np.zeros((cols * side, cols * side, *images.shape[3:]), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * side : (r + 1) * side, c * side : (c + 1) * side] = image
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue(), side


def config_pbtxt(epochs: list[int], side: int) -> str:
    """``ProjectorConfig`` in protobuf text format: one embedding per epoch, paths relative to
    the log directory."""
    blocks = []
    for e in epochs:
        folder = epoch_file(Path(), e, "").name
        blocks.append(
            "embeddings {\n"
            f'  tensor_name: "EN ratios, epoch {e}"\n'
            f'  tensor_path: "{folder}/tensor.tsv"\n'
            f'  metadata_path: "{folder}/metadata.tsv"\n'
            "  sprite {\n"
            '    image_path: "sprite.png"\n'
            f"    single_image_dim: {side}\n"
            f"    single_image_dim: {side}\n"
            "  }\n"
            "}\n"
        )
    return "".join(blocks)


def write_projector(run: RunFolder, epochs: list[int] | None = None) -> Path:
    """Write ``RUN/projector/`` for ``epochs`` (default: every extracted epoch); return it."""
    epochs = epochs or run.extracted_epochs()
    loaded = [run.ratios(e) for e in epochs]
    out = run.files.projector
    for r in loaded:
        folder = epoch_file(out, r.epoch, "")
        atomic_write_text(folder / "tensor.tsv", tensor_tsv(r))
        atomic_write_text(folder / "metadata.tsv", metadata_tsv(r))
    png, side = sprite(thumbnail_images(run.config.data, loaded[0].sample_index, SPRITE_SIDE))
    atomic_write_bytes(out / "sprite.png", png)
    atomic_write_text(out / "projector_config.pbtxt", config_pbtxt(epochs, side))
    return out
