"""The conformance kit (codenn.testing) run over every registered architecture and link factory."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import timm
import torch
import torchvision
from torch import nn

from codenn import BoundarySpec, ConfigError, Service, ServiceCard, SplitError
from codenn.contracts.plugins import create_plugins
from codenn.contracts.splitters import find_splitter
from codenn.testing import (
    check_boundary_specs,
    check_link_factory,
    check_service_frozen,
    check_splitter,
    recomposition_error,
)


def tv(name: str) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, num_classes=10)


def tm(name: str) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=10)


# every registered splitter -> the architectures it must handle, with an input size
ARCHITECTURES: dict[str, list[tuple[str, Callable[[], nn.Module], int]]] = {
    "alexnet": [("alexnet", tv("alexnet"), 64)],
    "mobilenet_v2": [("mobilenet_v2", tv("mobilenet_v2"), 64)],
    "mobilenet_v3": [("mobilenet_v3_small", tv("mobilenet_v3_small"), 64),
                     ("mobilenet_v3_large", tv("mobilenet_v3_large"), 64)],
    "resnet": [(n, tv(n), 32) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")],
    "timm": [("timm/resnet18", tm("resnet18"), 64), ("timm/mobilenetv3_small_050", tm("mobilenetv3_small_050"), 64)],
    # the generic torch.fx splitter (issue 11): a CNN no other splitter handles, and a ViT
    "fx": [("squeezenet1_1", tv("squeezenet1_1"), 64),
           ("timm/vit_tiny", lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                                       num_classes=10), 32)],
}
CASES = [(splitter, arch, make, size) for splitter, items in ARCHITECTURES.items() for arch, make, size in items]


def test_every_registered_splitter_is_covered() -> None:
    builtin = {n for n in create_plugins().splitters.names()
               if create_plugins().splitters.owner(n) in {"alexnet", "mobilenet", "resnet", "timm", "fx"}}
    assert builtin == set(ARCHITECTURES)


@pytest.mark.parametrize(("splitter", "arch", "make", "size"), CASES, ids=[c[1] for c in CASES])
def test_splitter_conformance(plugins, splitter: str, arch: str, make, size: int) -> None:
    s = plugins.splitters.get(splitter)
    model = make()
    top = s.max_blocks(model)
    counts = sorted({2, 3, min(s.default_blocks, top), top})
    worst = check_splitter(s, lambda: model, input_shape=(3, size, size), block_counts=counts)
    assert max(worst.values()) <= 1e-5
    service = Service(arch.replace("/", "_"), model, input_shape=(3, size, size), num_blocks=counts[1],
                      splitter=splitter, plugins=plugins)
    check_boundary_specs(service)
    check_service_frozen(service)


def test_paper_alexnet_partition_has_seven_blocks(plugins) -> None:
    service = Service("alexnet", torchvision.models.alexnet(num_classes=10), input_shape=(3, 64, 64),
                      plugins=plugins)
    assert service.num_blocks == 7
    assert [b.name for b in service.blocks] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6..fc7", "fc8"]
    assert [b.layout for b in service.boundaries] == ["NCHW"] * 5 + ["NC", "NC"]
    assert recomposition_error(service.model, list(service.blocks), service.input_spec) == 0.0


def test_service_card_is_public_and_round_trips(plugins) -> None:
    service = Service("mnv2", torchvision.models.mobilenet_v2(num_classes=5), input_shape=(3, 64, 64),
                      num_blocks=5, plugins=plugins)
    card = service.card
    text = card.to_json()
    data = json.loads(text)
    assert ServiceCard.from_json(text) == card
    assert data["family"] == "mobilenet_v2" and data["modality"] == "image"
    assert len(data["blocks"]) == 5 and len(data["boundaries"]) == 5
    assert data["total_params"] == sum(p.numel() for p in service.model.parameters())
    assert all(b["flops"] > 0 for b in data["blocks"])
    assert data["boundaries"][0]["shape"] == [24, 16, 16] and data["boundaries"][0]["reduction"] == 4
    assert len(text) < 10_000  # a card is a description, never the parameters
    check_service_frozen(service)


def test_service_from_local_safetensors(tmp_path, plugins) -> None:
    from codenn.model.loading import save_safetensors

    trained = torchvision.models.resnet18(num_classes=4)
    path = save_safetensors(trained, tmp_path / "weights" / "resnet18.safetensors")
    service = Service.from_name("resnet18", weights=path, num_classes=4, input_shape=(3, 32, 32), plugins=plugins)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(service(x), trained.eval()(x))
    with pytest.raises(ConfigError, match="does not fit"):
        Service.from_name("resnet34", weights=path, num_classes=4, plugins=plugins)
    with pytest.raises(ConfigError, match="does not exist"):
        Service.from_name("resnet18", weights=tmp_path / "missing.safetensors", plugins=plugins)
    assert not list((tmp_path / "weights").glob("*.tmp"))


def test_unknown_model_and_unsupported_architecture(plugins) -> None:
    with pytest.raises(ConfigError, match="unknown model 'not_a_model'"):
        Service.from_name("not_a_model", plugins=plugins)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=3)
    assert Service("vit", vit, input_shape=(3, 64, 64), plugins=plugins).splitter_name == "fx"  # issue 11
    with pytest.raises(SplitError, match="alexnet"):  # without the generic fallback splitter
        find_splitter(vit, [s for s in plugins.splitters if not s.fallback])
    with pytest.raises(SplitError, match="valid block counts are 1..8"):
        Service("a", torchvision.models.alexnet(), num_blocks=9, input_shape=(3, 64, 64), plugins=plugins)
    with pytest.raises(SplitError, match="block 0 .* fails on an input"):
        Service("a", torchvision.models.alexnet(), input_shape=(1, 64, 64), plugins=plugins)
    with pytest.raises(ConfigError, match="service name"):
        Service("bad name!", torchvision.models.alexnet(), plugins=plugins)


LINK_PAIRS = [
    (BoundarySpec((64, 16, 16)), BoundarySpec((64, 16, 16))),
    (BoundarySpec((64, 16, 16)), BoundarySpec((128, 4, 4))),
    (BoundarySpec((32, 4, 4)), BoundarySpec((96, 8, 8))),
    (BoundarySpec((256, 3, 3)), BoundarySpec((4096,), layout="NC")),
]


@pytest.mark.parametrize("factory", ["conv1x1", "conv3x3", "bottleneck", "reduced5", "reduced25", "paper"])
def test_link_factory_conformance(plugins, factory: str) -> None:
    check_link_factory(factory, LINK_PAIRS, plugins=plugins)
