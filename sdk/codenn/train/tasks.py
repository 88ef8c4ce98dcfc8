"""Data sets by name, as a configuration names them: the built-in offline tasks, ``imagefolder:DIR``
and ``torchvision:NAME:ROOT``."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch.utils.data import TensorDataset

from codenn.errors import ConfigError
from codenn.train.data import Splits, image_folder, split_dataset, torchvision_dataset
from codenn.train.synthetic import digits, letters, shapes, textures

TASKS: dict[str, Callable[..., tuple[TensorDataset, int]]] = {
    "digits": digits,
    "letters": letters,
    "shapes": shapes,
    "textures": textures,
}


def task_splits(task: str, size: int = 64, seed: int = 0) -> Splits:
    """A task's data, split 60/20/20 with ``seed``.

    ``task`` is a built-in task (digits, shapes, textures), ``imagefolder:DIR`` (one sub-folder
    per class) or ``torchvision:NAME:ROOT`` (e.g. ``torchvision:CIFAR10:~/data``, already downloaded).
    """
    if task.startswith("imagefolder:"):
        return image_folder(os.path.expanduser(task.split(":", 1)[1]), size=size, seed=seed)
    if task.startswith("torchvision:"):
        _, name, root = (task.split(":", 2) + [""])[:3]
        return torchvision_dataset(name, os.path.expanduser(root or "."), size=size, seed=seed)
    if task not in TASKS:
        raise ConfigError(
            f"unknown task {task!r}; use a built-in task ({', '.join(sorted(TASKS))}), "
            "'imagefolder:DIR' or 'torchvision:NAME:ROOT'"
        )
    dataset, classes = TASKS[task](size=size)
    return split_dataset(dataset, classes, seed=seed, name=task)
