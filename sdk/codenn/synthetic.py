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
