"""Procedural paintings whose classes differ by style, not by subject.

Each style is a small renderer (brushwork, texture, palette, composition). Palettes are
drawn from a pool shared by all styles, and a share of the paintings carry a faint
layer of another style, so colour alone does not give the class away and a linear
probe does not reach 100 %. Every image is a pure function of (seed, split, index).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from artmove.data.sources.base import SPLITS, PaintingSource, PaintingSplit

Renderer = Callable[[np.random.Generator, int], Image.Image]
STYLES: dict[str, Renderer] = {}


def style(name: str) -> Callable[[Renderer], Renderer]:
    def register(render: Renderer) -> Renderer:
        STYLES[name] = render
        return render

    return register


def palette(rng: np.random.Generator, n: int, saturation=(0.3, 0.9), value=(0.3, 1.0)) -> list[tuple[int, int, int]]:
    """``n`` colours around a random base hue (analogous or complementary scheme)."""
    base = rng.random()
    spread = rng.choice([0.08, 0.2, 0.5])
    colours = []
    for _ in range(n):
        hue = (base + rng.normal(0, spread)) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))
        colours.append((int(red * 255), int(green * 255), int(blue * 255)))
    return colours


def jitter(colour, rng: np.random.Generator, amount: float = 20.0) -> tuple[int, int, int]:
    red, green, blue = (int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in colour)
    return red, green, blue


def canvas(size: int, colour) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (size, size), tuple(colour))
    return image, ImageDraw.Draw(image)


def smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (size, size): bilinear upsampling of noise."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


@style("pointillism")
def _pointillism(rng, size):
    colours = np.array(palette(rng, 6, value=(0.5, 1.0)), dtype=np.float32)
    image, draw = canvas(size, jitter((235, 230, 215), rng))
    field = smooth_field(rng, size, cells=rng.integers(2, 5))
    radius = rng.uniform(0.01, 0.02) * size
    count = int(rng.uniform(0.6, 1.0) * (size / radius) ** 2 / 3)
    xs, ys = rng.integers(0, size, (2, count))
    picks = (field[ys, xs] * (len(colours) - 1) + rng.integers(0, 2, count)).astype(int) % len(colours)
    fills = np.clip(colours[picks] + rng.normal(0, 25, (count, 3)), 0, 255).astype(int)
    radii = radius * rng.uniform(0.7, 1.3, count)
    for x, y, r, fill in zip(xs.tolist(), ys.tolist(), radii.tolist(), fills.tolist(), strict=True):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(fill))
    return image


@style("impressionism")
def _impressionism(rng, size):
    colours = np.array(palette(rng, 5, saturation=(0.2, 0.6), value=(0.6, 1.0)), dtype=np.float32)
    image, draw = canvas(size, jitter(colours[0], rng))
    angle_field = smooth_field(rng, size, cells=3) * 2 * math.pi
    colour_field = smooth_field(rng, size, cells=3)
    length, width = rng.uniform(0.04, 0.08) * size, max(2, int(rng.uniform(0.014, 0.025) * size))
    count = int(rng.uniform(1.2, 2.0) * size * size / (length * width))
    xs, ys = rng.integers(0, size, (2, count))
    angles = angle_field[ys, xs] + rng.normal(0, 0.3, count)
    dxs, dys = np.cos(angles) * length / 2, np.sin(angles) * length / 2
    picks = (colour_field[ys, xs] * len(colours)).astype(int) % len(colours)
    fills = np.clip(colours[picks] + rng.normal(0, 30, (count, 3)), 0, 255).astype(int)
    for x, y, dx, dy, fill in zip(xs.tolist(), ys.tolist(), dxs.tolist(), dys.tolist(), fills.tolist(), strict=True):
        draw.line([x - dx, y - dy, x + dx, y + dy], fill=tuple(fill), width=width)
    return image


@style("expressionism")
def _expressionism(rng, size):
    colours = palette(rng, 5, saturation=(0.6, 1.0), value=(0.4, 1.0))
    image, draw = canvas(size, jitter(colours[0], rng, 40))
    for _ in range(int(rng.integers(25, 60))):
        points = [tuple(rng.integers(0, size, 2))]
        for _ in range(int(rng.integers(2, 5))):
            step = rng.normal(0, size * 0.15, 2)
            points.append(tuple(np.clip(np.array(points[-1]) + step, 0, size)))
        width = int(rng.uniform(0.03, 0.08) * size)
        draw.line(points, fill=jitter(colours[rng.integers(len(colours))], rng, 30), width=width, joint="curve")
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))


@style("hard_edge")
def _hard_edge(rng, size):
    colours = palette(rng, 5, saturation=(0.5, 1.0), value=(0.5, 1.0))
    image, draw = canvas(size, colours[0])
    for _ in range(int(rng.integers(3, 9))):
        if rng.random() < 0.6:
            x0, y0 = rng.integers(0, size, 2)
            x1, y1 = x0 + rng.integers(size // 8, size // 2), y0 + rng.integers(size // 8, size // 2)
            draw.rectangle([x0, y0, x1, y1], fill=colours[rng.integers(1, len(colours))])
        else:
            draw.polygon([tuple(rng.integers(0, size, 2)) for _ in range(3)], fill=colours[rng.integers(1, len(colours))])
    return image


@style("color_field")
def _color_field(rng, size):
    colours = palette(rng, 4, saturation=(0.4, 0.9), value=(0.3, 0.9))
    image, draw = canvas(size, colours[0])
    bands = int(rng.integers(2, 4))
    margin = rng.uniform(0.06, 0.15) * size
    height = (size - 2 * margin) / bands
    for i in range(bands):
        top = margin + i * height + height * 0.06
        draw.rectangle([margin, top, size - margin, top + height * 0.88], fill=colours[1 + i % 3])
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(2, 6)))
    noise = rng.normal(0, 6, (size, size, 1))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


@style("drip")
def _drip(rng, size):
    colours = palette(rng, 5, saturation=(0.0, 0.7), value=(0.1, 1.0))
    image, draw = canvas(size, jitter(colours[0], rng, 30))
    for _ in range(int(rng.integers(12, 30))):
        x, y = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(int(rng.integers(20, 60))):
            heading += rng.normal(0, 0.5)
            x, y = x + math.cos(heading) * size * 0.03, y + math.sin(heading) * size * 0.03
            points.append((x, y))
        colour = colours[rng.integers(len(colours))]
        draw.line(points, fill=colour, width=int(rng.integers(1, 5)))
        for _ in range(int(rng.integers(5, 20))):
            px, py = points[rng.integers(len(points))]
            r = rng.uniform(0.5, 3.5)
            px, py = px + rng.normal(0, 8), py + rng.normal(0, 8)
            draw.ellipse([px - r, py - r, px + r, py + r], fill=colour)
    return image


@style("op_art")
def _op_art(rng, size):
    colours = palette(rng, 2, saturation=(0.0, 0.8), value=(0.0, 1.0))
    dark, light = sorted(colours, key=sum)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    frequency = rng.uniform(8, 25)
    kind = rng.integers(3)
    if kind == 0:  # warped stripes
        phase = xx * math.cos(rng.uniform(0, math.pi)) + yy * math.sin(rng.uniform(0, math.pi))
        phase = phase + rng.uniform(0.02, 0.1) * np.sin(yy * rng.uniform(3, 12))
    elif kind == 1:  # concentric rings
        cx, cy = rng.uniform(0.2, 0.8, 2)
        phase = np.hypot(xx - cx, yy - cy)
    else:  # bulging checkerboard
        bulge = 1 + 0.5 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 8)
        phase = np.sin(xx * frequency * bulge) * np.sin(yy * frequency * bulge) / frequency
    mask = (np.sin(phase * frequency * 2 * math.pi) > 0)[..., None]
    return Image.fromarray(np.where(mask, np.array(light), np.array(dark)).astype(np.uint8))


@style("flat_outlined")
def _flat_outlined(rng, size):
    colours = palette(rng, 6, saturation=(0.3, 0.8), value=(0.5, 1.0))
    seeds = rng.uniform(0, size, (int(rng.integers(6, 16)), 2))
    yy, xx = np.mgrid[0:size, 0:size]
    distances = (xx[..., None] - seeds[:, 0]) ** 2 + (yy[..., None] - seeds[:, 1]) ** 2
    region = distances.argmin(-1)
    fills = np.array([colours[i % len(colours)] for i in range(len(seeds))], dtype=np.uint8)
    image = fills[region]
    edges = (np.diff(region, axis=0, prepend=region[:1]) != 0) | (np.diff(region, axis=1, prepend=region[:, :1]) != 0)
    outline = Image.fromarray((edges * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(int(rng.choice([3, 5]))))
    image[np.asarray(outline) > 0] = jitter((25, 20, 20), rng, 10)
    return Image.fromarray(image)


@style("cubism")
def _cubism(rng, size):
    """Overlapping facets, each shaded by a linear gradient in a muted palette."""
    colours = palette(rng, 5, saturation=(0.1, 0.5), value=(0.25, 0.8))
    image, _ = canvas(size, colours[0])
    for _ in range(int(rng.integers(25, 50))):
        centre = rng.uniform(0, size, 2)
        points = np.clip(centre + rng.normal(0, size * 0.12, (int(rng.integers(3, 5)), 2)), 0, size - 1)
        (x0, y0), (x1, y1) = points.min(0).astype(int), points.max(0).astype(int) + 1
        facet = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(facet).polygon([tuple(p) for p in points - (x0, y0)], fill=255)
        a = rng.uniform(0, 2 * math.pi)
        ramp = np.cos(a) * np.arange(x1 - x0)[None, :] + np.sin(a) * np.arange(y1 - y0)[:, None]
        ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
        base = np.array(jitter(colours[rng.integers(len(colours))], rng, 15), dtype=np.float32)
        shaded = np.clip(base * (0.6 + 0.7 * ramp[..., None]), 0, 255).astype(np.uint8)
        image.paste(Image.fromarray(shaded), (int(x0), int(y0)), mask=facet)
    return image


@style("minimalism")
def _minimalism(rng, size):
    colours = palette(rng, 3, saturation=(0.0, 0.4), value=(0.5, 1.0))
    image, draw = canvas(size, colours[0])
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.5:
            position = int(rng.integers(size // 6, 5 * size // 6))
            width = int(rng.integers(1, max(2, size // 40)))
            box = [position, 0, position + width, size] if rng.random() < 0.5 else [0, position, size, position + width]
            draw.rectangle(box, fill=jitter(colours[1], rng, 40))
        else:
            x0, y0 = rng.integers(size // 4, size // 2, 2)
            draw.rectangle([x0, y0, x0 + rng.integers(size // 10, size // 3), y0 + rng.integers(size // 10, size // 3)], fill=colours[2])
    noise = rng.normal(0, 3, (size, size, 1))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


CLASSES = sorted(STYLES)


def render_painting(seed: int, split: str, index: int, size: int) -> tuple[Image.Image, int]:
    """The ``index``-th painting of ``split``: label ``index % len(CLASSES)``."""
    label = index % len(CLASSES)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    image = STYLES[CLASSES[label]](rng, size)
    if rng.random() < 0.35:  # a faint layer of another style
        other = CLASSES[(label + rng.integers(1, len(CLASSES))) % len(CLASSES)]
        image = Image.blend(image, STYLES[other](rng, size), float(rng.uniform(0.2, 0.45)))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return image, label


class SyntheticPaintingSplit(PaintingSplit):
    def __init__(self, seed: int, split: str, count: int, size: int):
        self.seed, self.split, self.count, self.size = seed, split, count, size

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:  # identifies the content: the feature cache keys on it
        return f"{type(self).__name__}(seed={self.seed}, split={self.split!r}, count={self.count}, size={self.size})"

    def __getitem__(self, index: int):
        if not 0 <= index < self.count:
            raise IndexError(index)
        return render_painting(self.seed, self.split, index, self.size)

    @property
    def labels(self) -> list[int]:
        return [index % len(CLASSES) for index in range(self.count)]


class SyntheticPaintings(PaintingSource):
    """The embedded demo data set: ``len(CLASSES)`` styles, balanced splits, rendered on access."""

    def __init__(
        self, train_per_class: int = 48, val_per_class: int = 16, test_per_class: int = 16, canvas_size: int = 256, seed: int = 42
    ):
        self.classes = list(CLASSES)
        self.per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
        self.canvas_size, self.seed = canvas_size, seed

    def split(self, name: str, min_image_size: int | None = None) -> SyntheticPaintingSplit:
        return SyntheticPaintingSplit(self.seed, name, self.per_class[name] * len(self.classes), self.canvas_size)
