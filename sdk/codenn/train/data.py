"""Data for link training: deterministic train / validation / test splits of any dataset.

Selection uses the validation split; reported accuracies come from the test split, which the
search never looks at while choosing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from codenn.errors import ConfigError


class SizedDataset(Protocol):
    """What the splits need of a data set: a length and ``(x, y)`` items by index (every
    map-style torch or torchvision data set)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@dataclass(frozen=True)
class Splits:
    """Three disjoint datasets and the number of classes of the local task."""

    train: SizedDataset
    val: SizedDataset
    test: SizedDataset
    num_classes: int
    name: str = "data"

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            if len(getattr(self, part)) == 0:
                raise ConfigError(f"data set {self.name!r}: the {part} split is empty; provide more samples")
        if self.num_classes < 2:
            raise ConfigError(f"data set {self.name!r}: num_classes must be >= 2, got {self.num_classes}")

    def sizes(self) -> dict[str, int]:
        return {p: len(getattr(self, p)) for p in ("train", "val", "test")}


def split_dataset(
    dataset: SizedDataset,
    num_classes: int,
    *,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    name: str = "data",
) -> Splits:
    """Shuffle with ``seed`` and cut into train / validation / test by ``fractions``."""
    n = len(dataset)
    if n == 0:
        raise ConfigError(f"data set {name!r} is empty: nothing to train or evaluate on")
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"fractions must be three positive numbers summing to 1, got {tuple(fractions)}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    a = round(n * fractions[0])
    b = a + round(n * fractions[1])
    whole = cast("Dataset[Any]", dataset)  # any map-style data set; Subset only indexes it
    return Splits(Subset(whole, order[:a]), Subset(whole, order[a:b]), Subset(whole, order[b:]), num_classes, name)


def tensors(dataset: SizedDataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise a (small) image-classification dataset as (inputs, labels) tensors."""
    if isinstance(dataset, TensorDataset) and limit is None:
        x, y = dataset.tensors[:2]
        return x, y
    n = len(dataset)
    if n == 0:
        raise ConfigError("cannot materialise an empty dataset")
    n = n if limit is None else min(n, limit)
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack([torch.as_tensor(x) for x in xs]), torch.as_tensor(ys, dtype=torch.long)


def image_folder(root: str | os.PathLike[str], size: int = 64, **split_options: Any) -> Splits:
    """An ImageFolder directory (one sub-folder per class), resized to ``size`` x ``size``."""
    from torchvision import datasets, transforms

    if not os.path.isdir(root):
        raise ConfigError(f"image folder {str(root)!r} does not exist or is not a directory")
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])
    try:
        ds = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise ConfigError(f"image folder {str(root)!r} holds no images in class sub-folders: {exc}") from exc
    return split_dataset(ds, len(ds.classes), name=os.path.basename(os.fspath(root)), **split_options)


TORCHVISION_DATASETS = ("CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "SVHN")


def torchvision_dataset(
    name: str, root: str | os.PathLike[str], *, size: int = 64, download: bool = False, **split_options: Any
) -> Splits:
    """A torchvision data set (train and test parts pooled, then split), for users who have it."""
    from torch.utils.data import ConcatDataset
    from torchvision import datasets, transforms

    if name not in TORCHVISION_DATASETS:
        raise ConfigError(f"torchvision data set {name!r} is not supported; choose one of {TORCHVISION_DATASETS}")
    tf = transforms.Compose([transforms.Resize((size, size)), transforms.Grayscale(3) if name in ("MNIST", "FashionMNIST")
                             else transforms.Lambda(lambda im: im), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])
    cls = getattr(datasets, name)
    try:
        if name == "SVHN":
            parts = [cls(str(root), split=s, transform=tf, download=download) for s in ("train", "test")]
        else:
            parts = [cls(str(root), train=t, transform=tf, download=download) for t in (True, False)]
    except RuntimeError as exc:
        raise ConfigError(f"torchvision data set {name!r} not found under {str(root)!r} "
                          f"(pass download=True where you have internet): {exc}") from exc
    classes = {"CIFAR100": 100}.get(name, 10)
    return split_dataset(ConcatDataset(parts), classes, name=name, **split_options)
