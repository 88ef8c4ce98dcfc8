"""Offline data for the built-in scenario: scikit-learn's handwritten digits (real) and rendered
shapes and textures (generated), so nothing is downloaded.

Both return image tensors normalised to [-1, 1], 3 channels, ``size`` x ``size``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

SHAPES = ("disc", "square", "triangle", "cross", "ring", "hbars", "vbars", "checker")
TEXTURES = ("noise", "stripes_diag", "dots", "waves", "grid", "gradient")


def digits(size: int = 64) -> tuple[TensorDataset, int]:
    """scikit-learn's bundled 1,797 handwritten digits (8x8, real), upsampled to RGB ``size``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return TensorDataset(x * 2 - 1, torch.tensor(d.target, dtype=torch.long)), 10


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return x, y


def shapes(n: int = 2000, size: int = 64, seed: int = 1) -> tuple[TensorDataset, int]:
    """Coloured geometric shapes of random size, position and colour on noisy backgrounds."""
    rng = np.random.default_rng(seed)
    x, y = _grid(size)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, len(SHAPES), n)
    for i, label in enumerate(labels):
        cx, cy = rng.uniform(0.3, 0.7, 2)
        r = rng.uniform(0.15, 0.3)
        dx, dy = x - cx, y - cy
        kind = SHAPES[label]
        if kind == "disc":
            mask = dx**2 + dy**2 < r**2
        elif kind == "square":
            mask = (abs(dx) < r * 0.8) & (abs(dy) < r * 0.8)
        elif kind == "triangle":
            mask = (dy < r * 0.7) & (dy > -r) & (abs(dx) < (dy + r) * 0.6)
        elif kind == "cross":
            mask = ((abs(dx) < r * 0.25) | (abs(dy) < r * 0.25)) & (abs(dx) < r) & (abs(dy) < r)
        elif kind == "ring":
            d2 = dx**2 + dy**2
            mask = (d2 < r**2) & (d2 > (r * 0.6) ** 2)
        elif kind == "hbars":
            mask = (np.sin(dy * 40 / (r * 8)) > 0) & (abs(dx) < r) & (abs(dy) < r)
        elif kind == "vbars":
            mask = (np.sin(dx * 40 / (r * 8)) > 0) & (abs(dx) < r) & (abs(dy) < r)
        else:
            mask = ((np.floor(dx / (r / 2)) + np.floor(dy / (r / 2))) % 2 == 0) & (abs(dx) < r) & (abs(dy) < r)
        bg = rng.uniform(0, 0.5, 3)[:, None, None] + rng.normal(0, 0.08, (3, size, size))
        fg = rng.uniform(0.5, 1.0, 3)[:, None, None]
        images[i] = np.where(mask[None], fg, bg)
    return TensorDataset(torch.from_numpy(np.clip(images, 0, 1) * 2 - 1), torch.from_numpy(labels).long()), len(SHAPES)


def textures(n: int = 2000, size: int = 64, seed: int = 2) -> tuple[TensorDataset, int]:
    """Full-image textures of random frequency, phase and colour: a second, distinct host task."""
    rng = np.random.default_rng(seed)
    x, y = _grid(size)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, len(TEXTURES), n)
    for i, label in enumerate(labels):
        f = rng.uniform(6, 14)
        ph = rng.uniform(0, 2 * np.pi)
        kind = TEXTURES[label]
        if kind == "noise":
            v = rng.uniform(0, 1, (size, size))
        elif kind == "stripes_diag":
            v = 0.5 + 0.5 * np.sin((x + y) * f * np.pi + ph)
        elif kind == "dots":
            v = ((np.sin(x * f * np.pi + ph) * np.sin(y * f * np.pi + ph)) > 0.6).astype(np.float32)
        elif kind == "waves":
            v = 0.5 + 0.5 * np.sin(x * f * np.pi + 2 * np.sin(y * 6 + ph))
        elif kind == "grid":
            v = ((np.abs(np.sin(x * f * np.pi + ph)) < 0.2) | (np.abs(np.sin(y * f * np.pi + ph)) < 0.2)).astype(np.float32)
        else:
            a = rng.uniform(0, 2 * np.pi)
            v = (np.cos(a) * x + np.sin(a) * y + 1) / 2
        c1, c2 = rng.uniform(0, 1, (2, 3))
        img = c1[:, None, None] * v[None] + c2[:, None, None] * (1 - v[None])
        images[i] = img + rng.normal(0, 0.05, (3, size, size))
    return TensorDataset(torch.from_numpy(np.clip(images, 0, 1) * 2 - 1), torch.from_numpy(labels).long()), len(TEXTURES)


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif.ttf",
               "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
               "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
               "cmtt10.ttf", "cmb10.ttf")


def _fonts() -> list[str]:
    """The TrueType fonts matplotlib ships (so no download and no system font is needed)."""
    import os

    import matplotlib

    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
    found = [os.path.join(folder, f) for f in _FONT_FILES if os.path.isfile(os.path.join(folder, f))]
    if not found:
        raise FileNotFoundError(f"no TrueType font of {_FONT_FILES} in {folder}: is matplotlib installed whole?")
    return found


def letters(n: int = 6000, size: int = 64, seed: int = 3) -> tuple[TensorDataset, int]:
    """Letters A-Z (upper or lower case, one class per letter) rendered from matplotlib's fonts with
    random size, rotation, shear, position and stroke width, made the way scikit-learn's digits
    were: a 32x32 bitmap whose 4x4 blocks are counted into an 8x8 image, plus noise, then scaled
    to ``size``. A host trained on it learns pen strokes, which is what handwritten digits are
    made of: the transfer the paper gets from ImageNet to CIFAR-10, offline."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    fonts = _fonts()
    labels = rng.integers(0, len(LETTERS), n)
    small = np.empty((n, 8, 8), dtype=np.float32)
    for i, label in enumerate(labels):
        char = LETTERS[label] if rng.random() < 0.5 else LETTERS[label].lower()
        font = ImageFont.truetype(fonts[rng.integers(len(fonts))], 96)
        glyph = Image.new("L", (192, 192), 0)
        ImageDraw.Draw(glyph).text((40, 30), char, fill=255, font=font, stroke_width=int(rng.integers(0, 7)),
                                   stroke_fill=255)
        box = glyph.getbbox()
        if box is None:  # a font without this glyph: draw it with the first font
            ImageDraw.Draw(glyph).text((40, 30), char, fill=255, font=ImageFont.truetype(fonts[0], 96))
            box = glyph.getbbox() or (0, 0, 192, 192)
        glyph = glyph.crop(box)
        # fill the frame as the digits do: height 22-30 of 32 pixels, width by the glyph's aspect
        height = rng.uniform(22, 30)
        width = min(30.0, max(4.0, height * glyph.width / glyph.height * rng.uniform(0.8, 1.2)))
        glyph = glyph.resize((max(1, round(width * 4)), max(1, round(height * 4))), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (128, 128), 0)
        cx, cy = rng.uniform(-6, 6, 2)
        canvas.paste(glyph, (round(64 - glyph.width / 2 + cx), round(64 - glyph.height / 2 + cy)))
        angle, shear = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(-0.25, 0.25)
        a, b, d, e = np.cos(angle), np.sin(angle) + shear, -np.sin(angle), np.cos(angle)
        # the inverse affine map (output -> input) about the centre, as PIL's AFFINE transform takes it
        coeffs = (a, b, 64 - 64 * a - 64 * b, d, e, 64 - 64 * d - 64 * e)
        canvas = canvas.transform((128, 128), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        bits = np.asarray(canvas.resize((32, 32), Image.Resampling.BOX), dtype=np.float32) > 96
        small[i] = bits.reshape(8, 4, 8, 4).sum(axis=(1, 3)) / 16.0
    small = np.clip(small + rng.normal(0, 0.06, small.shape).astype(np.float32), 0, 1)
    x = F.interpolate(torch.from_numpy(small)[:, None], size=(size, size), mode="bilinear", align_corners=False)
    return TensorDataset(x.repeat(1, 3, 1, 1) * 2 - 1, torch.from_numpy(labels).long()), len(LETTERS)
