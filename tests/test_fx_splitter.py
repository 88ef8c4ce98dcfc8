"""The generic torch.fx splitter (plugin ``codenn_plugins.fx_splitter``) on one tiny model of each kind."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torchvision
from torch import nn

from codenn import Service, SplitError
from codenn.contracts.plugins import Plugins, create_plugins, get_plugins
from codenn.contracts.splitters import find_splitter
from codenn.testing import check_splitter
from codenn_plugins import fx_splitter
from codenn_plugins.alexnet import AlexNetSplitter
from codenn_plugins.fx_splitter import FxSplitter

SIZE = 32

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Residual(nn.Module):
    """A user's own model: stem, one residual unit (conv-act-conv + skip), head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = self.conv_b(self.act(self.conv_a(y))) + y
        return self.fc(self.drop(y.mean((2, 3))))


class Inception(nn.Module):
    """Branches concatenated (inception) and a block whose branch rejoins it (Xception-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch1 = nn.Conv2d(8, 4, 1)
        self.branch3 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 3, padding=1))
        self.pool = nn.MaxPool2d(2)
        self.sep = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.branch1(x), self.branch3(x)], dim=1)
        x = self.pool(x)
        x = self.sep(x) + x
        return self.head(x.flatten(2).mean(-1))


def vit() -> nn.Module:
    return timm.models.VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                         num_classes=10, drop_rate=0.1, drop_path_rate=0.1)


def swin() -> nn.Module:
    return timm.models.SwinTransformer(img_size=SIZE, patch_size=2, window_size=4, embed_dim=16, depths=(1, 1),
                                       num_heads=(1, 2), num_classes=10, drop_path_rate=0.1)


def densenet() -> nn.Module:
    return torchvision.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2,
                                       num_classes=10)


def vgg() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.2), nn.Linear(16 * (SIZE // 4) ** 2, 10))


MODELS: dict[str, Callable[[], nn.Module]] = {
    "vit": vit, "swin": swin, "densenet": densenet, "inception": Inception, "vgg": vgg, "residual": Residual,
}


@pytest.fixture
def splitter() -> FxSplitter:
    return FxSplitter()


@pytest.mark.parametrize("kind", list(MODELS))
def test_recomposes_exactly_at_default_and_max(splitter: FxSplitter, kind: str) -> None:
    model = MODELS[kind]()
    top = splitter.max_blocks(model)
    assert top >= 2
    # eval and train mode, parameters shared (no copies), unique names
    worst = check_splitter(splitter, MODELS[kind], input_shape=(3, SIZE, SIZE),
                           block_counts=sorted({min(splitter.default_blocks, top), top}))
    assert max(worst.values()) <= 1e-5
    own = {p.data_ptr(): p for p in model.parameters()}
    seen: set[int] = set()
    for _, block in splitter.split(model, top):
        for p in block.parameters():
            assert own.get(p.data_ptr()) is p  # the very same Parameter object
            seen.add(p.data_ptr())
    assert seen == set(own)


def test_no_cut_straddles_a_residual_or_a_concatenation(splitter: FxSplitter) -> None:
    paths = [c.path for c in splitter.cuts(Residual())]
    assert paths[0] == "stem"
    assert not {"conv_a", "act", "conv_b"} & set(paths)  # inside the residual unit
    paths = [c.path for c in splitter.cuts(Inception())]
    assert not {"branch1", "branch3", "sep.0", "sep.1", "sep.2"} & set(paths)
    assert {"stem", "pool"} <= set(paths)
    dense = [c.path for c in splitter.cuts(densenet())]
    assert not [p for p in dense if ".denselayer" in p]  # inside a dense block everything is concatenated


def test_vit_cuts_at_its_blocks_first(splitter: FxSplitter) -> None:
    model = vit()
    names = [n for n, _ in splitter.split(model, 3)]
    assert names == ["patch_embed..blocks.0", "blocks.1", "head"]
    service = Service("vit", model, input_shape=(3, SIZE, SIZE), num_blocks=3, plugins=_fx_only())
    assert [tuple(b.shape) for b in service.boundaries[:2]] == [(17, 32), (17, 32)]  # tokens, class token kept


def test_blocks_are_named_after_the_stages_they_hold(splitter: FxSplitter) -> None:
    """A block after the last cut holds the remaining stages and the head; its name says so (it
    was called "head" while it held blocks 2 and 3 too)."""
    model = timm.models.VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=32, depth=4, num_heads=2,
                                          num_classes=10)
    assert [n for n, _ in splitter.split(model, 3)] == ["patch_embed..blocks.0", "blocks.1", "blocks.2..head"]


def test_hand_written_splitters_win_whatever_the_order() -> None:
    alexnet = torchvision.models.alexnet()
    assert find_splitter(alexnet, [FxSplitter(), AlexNetSplitter()]).name == "alexnet"
    assert find_splitter(Residual(), [FxSplitter(), AlexNetSplitter()]).name == "fx"
    splitters = list(get_plugins().splitters)
    assert "fx" in [s.name for s in splitters]
    assert find_splitter(torchvision.models.resnet18(), splitters).name == "resnet"
    assert find_splitter(timm.create_model("resnet18", pretrained=False), splitters).name == "timm"
    assert find_splitter(vit(), splitters).name == "fx"


def _fx_only() -> Plugins:
    return create_plugins(load_entry_points=False, extra=[fx_splitter])


def test_service_default_block_count_is_capped_by_the_model() -> None:
    model = Residual()
    top = FxSplitter().max_blocks(model)
    assert top < FxSplitter.default_blocks
    service = Service("res", model, input_shape=(3, SIZE, SIZE), plugins=_fx_only())
    assert service.splitter_name == "fx" and service.num_blocks == top
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.testing.assert_close(service(x), model.eval()(x), rtol=0, atol=1e-5)


def test_bad_block_counts(splitter: FxSplitter) -> None:
    model = Residual()
    top = splitter.max_blocks(model)
    for bad in (0, -1, top + 1, 2.0):
        with pytest.raises(SplitError, match=rf"valid block counts are 1\.\.{top}"):
            splitter.split(model, bad)  # type: ignore[arg-type]  # the wrong type is the point


class _Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x  # data-dependent control flow: not traceable


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = _Gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.conv(x)).mean((2, 3))


def test_untraceable_model_names_where_tracing_stopped(splitter: FxSplitter) -> None:
    with pytest.raises(SplitError, match=r"stopped in module 'gate' \(_Gate\) after node 'gt'.*leaf.*plugin"):
        splitter.max_blocks(_Untraceable())
    # the hint works: as a leaf module, the gate is traced as one call
    leafy = FxSplitter(leaf_modules=[_Gate])
    model = _Untraceable()
    parts = leafy.split(model, leafy.max_blocks(model))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        y = x
        for _, block in parts:
            y = block(y)
        assert (y - model(x)).abs().max() <= 1e-6


def test_model_that_no_probe_size_fits_says_what_to_set() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 5, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(SplitError, match=r"input_size=\(C, H, W\)"):
        FxSplitter().max_blocks(model)
    assert FxSplitter(input_size=(3, 5, 5)).max_blocks(model) == 4  # after flatten, linear, relu


class _Claimed(nn.Module):
    """A timm-looking model the timm splitter claims (feature_info) but cannot cut: its feature
    module never runs in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)
        self.feature_info = [dict(num_chs=4, reduction=1, module="unused")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stem(x).mean((2, 3)))


_Claimed.__module__ = "timm.models.claimed_test"


def test_the_fallback_cuts_what_a_claiming_splitter_cannot() -> None:
    from codenn_plugins import timm_features

    plugins = create_plugins(load_entry_points=False, extra=[timm_features, fx_splitter])
    service = Service("claimed", _Claimed(), input_shape=(3, SIZE, SIZE), plugins=plugins)
    assert service.splitter_name == "fx"
    with pytest.raises(SplitError, match="called 0 times"):  # a named splitter gets no fallback
        Service("claimed", _Claimed(), input_shape=(3, SIZE, SIZE), splitter="timm", plugins=plugins)
    with pytest.raises(SplitError, match=r"valid block counts are 1\.\.2"):  # a count error stands
        Service("claimed", _Claimed(), input_shape=(3, SIZE, SIZE), num_blocks=3, plugins=plugins)
