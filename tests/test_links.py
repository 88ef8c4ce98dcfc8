"""The built-in link factories (plugin ``codenn_plugins.links``) on real tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import codenn
from codenn import BoundarySpec
from codenn.contracts.plugins import Plugins, create_plugins
from codenn.errors import BoundaryMismatchError, ConfigError, UnknownNameError
from codenn.model.blocks import parameter_count
from codenn_plugins import links as links_module
from codenn_plugins.links import ConvLink, linear_head

FACTORIES = ("conv1x1", "conv3x3", "bottleneck", "reduced25", "reduced5", "paper")


def nchw(c: int, h: int, w: int | None = None, name: str = "") -> BoundarySpec:
    return BoundarySpec((c, h, h if w is None else w), name=name)


def flat(n: int, name: str = "") -> BoundarySpec:
    return BoundarySpec((n,), layout="NC", name=name)


PAIRS = {
    "same": (nchw(16, 8), nchw(16, 8)),
    "channels": (nchw(16, 8), nchw(24, 8)),
    "down2": (nchw(16, 16), nchw(24, 8)),
    "down4": (nchw(8, 16), nchw(12, 4)),
    "down-nonsquare": (nchw(8, 16, 12), nchw(12, 8, 4)),
    "up": (nchw(16, 6), nchw(8, 13)),
    "non-integer 13->6": (nchw(16, 13), nchw(16, 6)),
    "alexnet 27->13": (nchw(12, 27), nchw(16, 13)),
    "nchw->nc": (nchw(16, 6), flat(32)),
    "nc->nc": (flat(40), flat(24)),
    "nc->nc same": (flat(40), flat(40)),
    "nc->nchw": (flat(40), nchw(8, 3)),
}


@pytest.fixture(scope="module")
def link_plugins() -> Plugins:
    return create_plugins(load_entry_points=False, extra=[links_module])


def build(
    plugins: Plugins, src: BoundarySpec, dst: BoundarySpec, name: str, **options: object
) -> nn.Module:
    return codenn.build_link(src, dst, name, plugins=plugins, **options)


def test_all_factories_registered(link_plugins: Plugins) -> None:
    assert set(FACTORIES) <= set(link_plugins.link_factories.names())
    for name in FACTORIES:
        assert link_plugins.link_factories.owner(name) == links_module.__name__
        assert link_plugins.link_factories.entry(name).description


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("pair", list(PAIRS))
def test_factory_output_shapes(link_plugins: Plugins, factory: str, pair: str) -> None:
    src, dst = PAIRS[pair]
    link = build(link_plugins, src, dst, factory)
    assert isinstance(link, ConvLink)
    assert sum(1 for _ in link.resample.parameters()) == 0
    assert sum(1 for _ in link.reshape.parameters()) == 0
    out = link(src.example(batch=3))
    assert tuple(out.shape) == (3, *dst.shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("resample", ["auto", "conv", "pool", "interpolate"])
@pytest.mark.parametrize("factory", ["conv1x1", "conv3x3", "bottleneck", "reduced5"])
def test_resample_modes_integer_downsampling(
    link_plugins: Plugins, factory: str, resample: str
) -> None:
    for src, dst in (PAIRS["down2"], PAIRS["down4"], PAIRS["down-nonsquare"]):
        link = build(link_plugins, src, dst, factory, resample=resample)
        assert tuple(link(src.example(batch=2)).shape[1:]) == dst.shape


def test_resample_choices(link_plugins: Plugins) -> None:
    src, dst = PAIRS["down2"]
    auto = build(link_plugins, src, dst, "conv1x1")
    assert isinstance(auto.resample, nn.MaxPool2d) and auto.resample_mode == "maxpool"
    avg = build(link_plugins, src, dst, "conv1x1", pool_mode="avg")
    assert isinstance(avg.resample, nn.AvgPool2d)
    strided = build(link_plugins, src, dst, "conv1x1", resample="conv")
    assert isinstance(strided.resample, nn.Identity)
    assert strided.body[0].stride == (2, 2) and strided.body[0].kernel_size == (2, 2)
    up = build(link_plugins, *PAIRS["up"], "conv1x1")
    assert up.resample_mode == "interpolate"
    odd = build(link_plugins, *PAIRS["non-integer 13->6"], "conv1x1")
    assert odd.resample_mode == "interpolate"
    adaptive = build(link_plugins, *PAIRS["non-integer 13->6"], "conv1x1", resample="pool")
    assert isinstance(adaptive.resample, nn.AdaptiveMaxPool2d)


def test_conv1x1_is_linear_after_resample(link_plugins: Plugins) -> None:
    """What least-squares initialisation relies on: link(x) == head(resample(x))."""
    src, dst = PAIRS["down2"]
    link = build(link_plugins, src, dst, "conv1x1")
    head = linear_head(link)
    assert isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1)
    x = src.example(batch=2)
    feats = link.resample(x)
    expected = torch.einsum("oc,nchw->nohw", head.weight[:, :, 0, 0], feats)
    expected = expected + head.bias[None, :, None, None]
    torch.testing.assert_close(link(x), expected)

    fl = build(link_plugins, *PAIRS["nc->nchw"], "conv1x1")
    assert isinstance(linear_head(fl), nn.Linear)
    x = PAIRS["nc->nchw"][0].example(batch=2)
    torch.testing.assert_close(fl(x).flatten(1), F.linear(x, fl.body[0].weight, fl.body[0].bias))
    assert linear_head(build(link_plugins, *PAIRS["same"], "bottleneck")) is None
    assert linear_head(nn.Linear(2, 2)) is None


def test_reduced_param_ratio(link_plugins: Plugins) -> None:
    s = nchw(256, 13)
    conv = parameter_count(build(link_plugins, s, s, "conv3x3"))
    r25 = parameter_count(build(link_plugins, s, s, "reduced25"))
    r5 = parameter_count(build(link_plugins, s, s, "reduced5"))
    assert 4.5 < r25 / r5 < 5.5
    # The paper: reduced links shrink a link by "almost 5 and 25 times".
    assert 4.5 < conv / r25 < 5.5
    assert 22 < conv / r5 < 28


def test_paper_rule(link_plugins: Plugins) -> None:
    differ = build(link_plugins, nchw(192, 27), nchw(256, 13), "paper")
    assert differ.kind == "conv3x3" and differ.factory == "paper"
    assert linear_head(differ) is not None and differ.resample_mode == "interpolate"
    down = build(link_plugins, nchw(64, 26), nchw(64, 13), "paper")
    assert down.kind == "conv3x3" and isinstance(down.resample, nn.MaxPool2d)
    equal = build(link_plugins, nchw(384, 13), nchw(256, 13), "paper")
    assert equal.kind == "bottleneck"
    assert equal.body[0].out_channels == max(8, 256 // 4)
    narrow = build(link_plugins, nchw(384, 13), nchw(256, 13), "paper", width=16)
    assert narrow.body[0].out_channels == 16
    assert build(link_plugins, flat(64), flat(64), "paper").kind == "bottleneck"
    assert build(link_plugins, flat(64), flat(32), "paper").kind == "conv3x3"


def test_alexnet_flat_boundaries(link_plugins: Plugins) -> None:
    """AlexNet's classifier boundaries are flat: 256x6x6 -> 9216 and 4096-d."""
    f4096 = flat(4096)
    to_flat = build(link_plugins, nchw(256, 6), f4096, "paper")
    assert tuple(to_flat(torch.randn(2, 256, 6, 6)).shape) == (2, 4096)
    big = build(link_plugins, flat(9216), f4096, "conv1x1")
    assert parameter_count(big) == 9216 * 4096 + 4096
    back = build(link_plugins, f4096, nchw(256, 6), "conv1x1")
    assert tuple(back(torch.randn(2, 4096)).shape) == (2, 256, 6, 6)
    small = build(link_plugins, flat(9216), f4096, "reduced25")
    assert parameter_count(small) == 9216 * 25 + 25 + 25 * 4096 + 4096


@pytest.mark.parametrize(
    ("pair", "resample"),
    [
        ("up", "pool"),
        ("up", "conv"),
        ("non-integer 13->6", "conv"),
        ("same", "bogus"),
        ("down2", ""),
    ],
)
def test_bad_resample_raises_config_error(link_plugins: Plugins, pair: str, resample: str) -> None:
    src, dst = PAIRS[pair]
    with pytest.raises(ConfigError) as info:
        build(link_plugins, src, dst, "conv1x1", resample=resample)
    msg = str(info.value)
    assert repr(resample) in msg and "'interpolate'" in msg


@pytest.mark.parametrize(
    ("factory", "options"),
    [
        ("conv1x1", {"widht": 3}),
        ("conv3x3", {"width": 8}),
        ("bottleneck", {"width": 0}),
        ("bottleneck", {"kernel": 2}),
        ("reduced25", {"activation": "gelu"}),
        ("paper", {"pool_mode": "min"}),
        ("paper", {"kernel": 3}),
    ],
)
def test_bad_options_raise_config_error(
    link_plugins: Plugins, factory: str, options: dict[str, object]
) -> None:
    src, dst = PAIRS["same"]
    with pytest.raises(ConfigError, match=factory):
        build(link_plugins, src, dst, factory, **options)


@pytest.mark.parametrize("factory", FACTORIES)
def test_tokens_are_rejected(link_plugins: Plugins, factory: str) -> None:
    tokens = BoundarySpec((49, 32), layout="NLC", name="tok")
    for src, dst in ((tokens, nchw(32, 7)), (nchw(32, 7), tokens), (tokens, tokens)):
        with pytest.raises(BoundaryMismatchError, match="tokens"):
            build(link_plugins, src, dst, factory)


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("pair", ["down2", "same", "up", "nchw->nc", "nc->nchw"])
def test_gradients_reach_every_parameter(link_plugins: Plugins, factory: str, pair: str) -> None:
    src, dst = PAIRS[pair]
    options = {"norm": True} if factory in ("bottleneck", "reduced5") else {}
    link = build(link_plugins, src, dst, factory, **options)
    link.train()
    x = src.example(batch=4, seed=1)
    target = torch.randn(4, *dst.shape)
    F.mse_loss(link(x), target).backward()
    params = list(link.named_parameters())
    assert params
    for name, p in params:
        assert p.requires_grad
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unknown_factory_lists_available(link_plugins: Plugins) -> None:
    src, dst = PAIRS["same"]
    with pytest.raises(UnknownNameError) as info:
        build(link_plugins, src, dst, "conv7x7")
    msg = str(info.value)
    assert "conv7x7" in msg
    for name in FACTORIES:
        assert repr(name) in msg


def test_direct_build_functions_validate_options() -> None:
    """Factories raise ConfigError themselves, not only through build_link's TypeError wrap."""
    with pytest.raises(ConfigError, match="valid options"):
        links_module.build_conv1x1(nchw(4, 4), nchw(4, 4), nope=1)
