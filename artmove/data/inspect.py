"""`python -m artmove.data.inspect data=wikiart data.root=...`: what a data set holds, at a glance.

Prints the class counts per split (as training will see them: bad files dropped, grouping
applied; the data module logs the artists per split and their overlap with train), image-size
statistics and the bad-file count, and writes ``contact_sheet.png`` (a row of sample paintings
per class) to the run folder.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from artmove.data.images import UnreadableImageError, load_rgb
from artmove.data.sources.base import SPLITS
from artmove.data.tools import load_datamodule, say
from artmove.utils.cli import exit_on_user_error


def count_table(classes: list[str], files: dict[str, list[tuple[Path, int]]]) -> str:
    counts = {split: Counter(label for _, label in files[split]) for split in SPLITS}
    width = max(len(name) for name in [*classes, "class"])
    lines = [f"  {'class':<{width}} " + "".join(f"{split:>8}" for split in SPLITS)]
    for label, name in enumerate(classes):
        lines.append(f"  {name:<{width}} " + "".join(f"{counts[split][label]:>8}" for split in SPLITS))
    lines.append(f"  {'total':<{width}} " + "".join(f"{len(files[split]):>8}" for split in SPLITS))
    return "\n".join(lines)


def size_statistics(sizes: list[tuple[int, int]]) -> str:
    if not sizes:
        return "  no readable images"
    array = np.array(sizes)
    lines = []
    for name, values in (("width", array[:, 0]), ("height", array[:, 1]), ("short side", array.min(1))):
        p5, median, p95 = np.percentile(values, [5, 50, 95])
        lines.append(f"  {name:<10} min {values.min():>5}  p5 {p5:>7.0f}  median {median:>7.0f}  p95 {p95:>7.0f}  max {values.max():>5}")
    megapixels = array.prod(1) / 1e6
    lines.append(f"  megapixels median {np.median(megapixels):.2f}, max {megapixels.max():.2f}")
    return "\n".join(lines)


def contact_sheet(classes: list[str], train: list[tuple[Path, int]], per_class: int, thumb: int, seed: int) -> Image.Image:
    """One row per class: its name, then ``per_class`` training paintings fitted into ``thumb`` px squares."""
    label_width = 6 * max(len(name) for name in classes) + 12
    sheet = Image.new("RGB", (label_width + per_class * (thumb + 4), len(classes) * (thumb + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    rng = random.Random(f"{seed}-sheet")
    for label, name in enumerate(classes):
        top = label * (thumb + 4)
        draw.text((4, top + thumb // 2 - 6), name, fill="black")
        paths = sorted(path for path, lab in train if lab == label)
        for column, path in enumerate(rng.sample(paths, min(per_class, len(paths)))):
            try:
                image = load_rgb(path, min_size=thumb)
            except UnreadableImageError:
                continue
            image.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
            left = label_width + column * (thumb + 4) + (thumb - image.width) // 2
            sheet.paste(image, (left, top + (thumb - image.height) // 2))
    return sheet


@hydra.main(version_base="1.3", config_path="pkg://artmove.conf", config_name="data_tools")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    datamodule = load_datamodule(cfg)
    files, classes = datamodule.files, datamodule.classes  # reads every header once (the screening)
    assert files is not None  # load_datamodule accepts only data sets read from files
    sizes = [check.size for check in datamodule.file_checks if check.size]
    bad = sum(1 for check in datamodule.file_checks if check.error)  # unreadable headers + listed but missing
    say("%s: %d classes", cfg.data.root, len(classes))
    grouped = datamodule.grouped_splits
    say("images per class and split%s:\n%s", f" ({'/'.join(grouped)} grouped by artist)" if grouped else "", count_table(classes, files))
    say("image sizes (px) of %d readable files:\n%s", len(sizes), size_statistics(sizes))
    say("bad files (header unreadable or missing): %d; `python -m artmove.data.verify` decodes every file", bad)
    output = Path(cfg.paths.output_dir) / "contact_sheet.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(classes, files["train"], cfg.sheet.per_class, cfg.sheet.thumb, cfg.seed).save(output)
    say("contact sheet: %s", output)


if __name__ == "__main__":
    main()
