"""The default scenario's pieces: rendered letters, the CIFAR-sized AlexNet, early stopping, and the
config defaults that follow the model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from codenn import Service
from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL, BaseModelSpec
from codenn.config.run import from_dict
from codenn.errors import ConfigError
from codenn.model.loading import MODELS, AlexNetCifar, load_model
from codenn.train.base_models import base_model
from codenn.train.synthetic import LETTERS, digits, letters
from codenn.train.tasks import TASKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_letters_are_26_classes_of_digit_like_images() -> None:
    x, y = letters(n=130, size=32, seed=5)[0].tensors
    assert x.shape == (130, 3, 32, 32) and x.dtype == torch.float32 and len(LETTERS) == 26
    assert x.min() >= -1 and x.max() <= 1 and set(y.tolist()) <= set(range(26))
    again = letters(n=130, size=32, seed=5)[0].tensors[0]
    assert torch.equal(x, again)  # deterministic for a seed
    assert not torch.equal(x, letters(n=130, size=32, seed=6)[0].tensors[0])
    # made like scikit-learn's digits: a similar amount of ink on the same dark background
    d = digits(size=32)[0].tensors[0]
    assert abs(float(x.mean()) - float(d.mean())) < 0.25
    assert float((x[:, 0] > 0).float().mean()) > 0.1  # the glyphs fill the frame, not a dot in it


def test_alexnet_cifar_splits_like_alexnet_with_the_work_in_its_convolutions() -> None:
    model = load_model("alexnet_cifar", num_classes=10)
    assert isinstance(model, AlexNetCifar) and "alexnet_cifar" in MODELS
    svc = Service("alexnet", model, input_shape=(3, 32, 32), architecture="alexnet_cifar")
    assert svc.splitter_name == "alexnet" and svc.num_blocks == 7
    blocks = svc.card.blocks
    assert 1.8e6 < sum(b.params for b in blocks[1:4]) < 1.95e6  # the paper's blocks 2-4
    conv_flops = sum(b.flops for b in blocks[:5])
    assert conv_flops > 0.95 * sum(b.flops for b in blocks)
    assert svc.run(torch.randn(2, 3, 32, 32), 0, None).shape == (2, 10)
    with pytest.raises(ConfigError, match="no pretrained weights"):
        load_model("alexnet_cifar", weights="DEFAULT")
    with pytest.raises(ConfigError, match="codenn's own"):
        load_model("no_such_model_xyz")


class _Tiny(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _noise_task(size: int = 8) -> tuple[TensorDataset, int]:
    """Labels independent of the inputs: validation accuracy cannot keep rising."""
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(200, 3, size, size, generator=g), torch.randint(0, 2, (200,), generator=g)), 2


def test_early_stopping_keeps_the_best_epoch_and_old_cache_keys(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CODENN_CACHE", str(tmp_path))
    monkeypatch.setitem(MODELS, "tiny_test_mlp", _Tiny)
    monkeypatch.setitem(TASKS, "noise", _noise_task)
    spec = BaseModelSpec("tiny_test_mlp", "noise", epochs=50, lr=1e-2, size=8, patience=2)
    lines: list[str] = []
    _, meta = base_model(spec, log=lines.append)
    assert meta["epochs_run"] < 50 and meta["epochs_run"] - meta["best_epoch"] == 2
    assert any("has not risen for 2 epochs" in line for line in lines)
    cached = json.loads(next((tmp_path / "base").glob("*.json")).read_text())
    assert cached["best_epoch"] == meta["best_epoch"]
    # a spec without early stopping keeps the key it had before the field existed
    # (5f0dc4d1f850 is the key the old default AlexNet was cached under)
    assert BaseModelSpec("alexnet", "digits", epochs=6, lr=1e-4).key() == "5f0dc4d1f850"
    with pytest.raises(ConfigError, match="patience"):
        BaseModelSpec("alexnet", "digits", epochs=6, lr=1e-4, patience=-1)
    # with learning-rate drops it goes back to the best weights at a tenth of the rate, then stops
    lines.clear()
    _, meta = base_model(BaseModelSpec("tiny_test_mlp", "noise", epochs=50, lr=1e-2, size=8, patience=2,
                                             lr_drops=1), log=lines.append)
    assert sum("learning rate 1.0e-03" in line for line in lines) == 1 and meta["epochs_run"] < 50


def test_another_model_in_the_config_starts_from_generic_defaults() -> None:
    run = from_dict({"local": {"model": "alexnet", "task": "digits"}})
    assert run.local.base.size == 64 and run.local.base.patience == 0 and run.local.name == "alexnet"
    default = from_dict({})
    assert default.local.base == DEFAULT_LOCAL and default.hosts[0].base == DEFAULT_HOST
    with pytest.raises(ConfigError, match="also set task"):
        from_dict({"local": {"model": "resnet18"}})


def test_a_cache_file_name_never_holds_the_task_text(tmp_path, monkeypatch) -> None:
    """``task = "imagefolder:/data/x"`` wrote base/resnet18-imagefolder:/data/x-HASH.safetensors: a
    tree of folders named after the user's path, and a colon (invalid on some file systems)."""
    from codenn.train.base_models import cached_files

    monkeypatch.setenv("CODENN_CACHE", str(tmp_path))
    weights, record = cached_files(BaseModelSpec("resnet18", "imagefolder:/data/my photos/x", epochs=1, lr=1e-3))
    assert weights.parent == record.parent == tmp_path / "base"
    assert weights.name.startswith("resnet18-imagefolder_data_my_photos_x-") and ":" not in weights.name
    # built-in tasks keep the names the bundled weights were shipped under
    assert cached_files(DEFAULT_HOST)[0].name == "mobilenet_v2-letters-6861702d3f0f.safetensors"
