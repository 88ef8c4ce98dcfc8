"""Boundaries beyond NCHW (NHWC maps, tokens with grid and prefix tokens, flat) and the layout
links ``linear`` / ``mlp`` between every pair, least squares included; a CNN <-> ViT cross path."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import codenn
from codenn import BoundarySpec, Service, ServiceCard, UnitSplitter, hookimpl
from codenn.config.train import TrainConfig
from codenn.contracts.plugins import Plugins, create_plugins
from codenn.errors import BoundaryMismatchError, ConfigError
from codenn.model.blocks import LayoutHints, infer_grid
from codenn.paths.composed import ComposedPath
from codenn.train.features import FeatureCache
from codenn.train.lstsq import init_path_links, least_squares_init
from codenn.train.trainer import LinkTrainer
from codenn_plugins import links as links_module
from codenn_plugins.layout_links import LAYOUT_LINKS, LayoutAdapter
from codenn_plugins.links import LAYOUT_FACTORIES, ConvLink, linear_head
from tiny import TinyCNN, TinySplitter, tiny_plugins

SPECS = {
    "NCHW": BoundarySpec((16, 8, 8), name="map"),
    "NCHW-small": BoundarySpec((12, 4, 4), name="map4"),
    "NHWC": BoundarySpec((4, 4, 24), layout="NHWC", name="swin"),
    "NLC-cls": BoundarySpec((17, 32), layout="NLC", name="vit"),  # 4x4 grid + class token
    "NLC-dist": BoundarySpec((66, 16), layout="NLC", name="deit", prefix_tokens=2),  # 8x8 + 2
    "NLC": BoundarySpec((64, 12), layout="NLC", name="tokens"),  # 8x8, no prefix
    "NC": BoundarySpec((40,), layout="NC", name="flat"),
}
PAIRS = list(itertools.product(SPECS, SPECS))
OLD_FACTORIES = ("conv1x1", "conv3x3", "bottleneck", "reduced25", "reduced5", "paper")


@pytest.fixture(scope="module")
def link_plugins() -> Plugins:
    return create_plugins(load_entry_points=False, extra=[links_module])


def build(plugins: Plugins, src: str, dst: str, factory: str, **options: object) -> nn.Module:
    return codenn.build_link(SPECS[src], SPECS[dst], factory, plugins=plugins, **options)


# -- BoundarySpec ------------------------------------------------------------------------------
def test_token_grid_and_prefix_inference() -> None:
    assert infer_grid(197) == ((14, 14), 1)
    assert infer_grid(198) == ((14, 14), 2)
    assert infer_grid(49) == ((7, 7), 0)
    assert infer_grid(31) is None
    spec = BoundarySpec((50, 8), layout="NLC")
    assert (spec.grid, spec.prefix_tokens, spec.hw, spec.kind) == ((7, 7), 1, (7, 7), "tokens")
    given = BoundarySpec((52, 8), layout="NLC", grid=(6, 8), prefix_tokens=4)
    assert given.grid == (6, 8) and given.prefix_tokens == 4
    assert BoundarySpec((31, 8), layout="NLC").grid is None  # a sequence, no grid
    nhwc = BoundarySpec((7, 5, 96), layout="NHWC")
    assert (nhwc.channels, nhwc.spatial, nhwc.hw, nhwc.kind) == (96, (7, 5), (7, 5), "map")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (17, 8), "layout": "NLC", "grid": (4, 3), "prefix_tokens": 1}, "gives 13 tokens"),
        ({"shape": (17, 8), "layout": "NLC", "prefix_tokens": 18}, "prefix_tokens=18"),
        ({"shape": (8, 4, 4), "grid": (4, 4)}, "only token boundaries"),
        ({"shape": (8, 4, 4), "layout": "NWHC"}, "NHWC"),
        ({"shape": (8, 4), "layout": "NHWC"}, "does not fit layout NHWC"),
    ],
)
def test_bad_specs_raise_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BoundarySpec(**kwargs)  # type: ignore[arg-type]  # bad values on purpose


def test_of_reads_layout_grid_and_reduction() -> None:
    t = torch.randn(2, 17, 64)
    spec = BoundarySpec.of(t, input_size=32)
    assert (spec.layout, spec.grid, spec.prefix_tokens, spec.reduction) == ("NLC", (4, 4), 1, 8)
    assert BoundarySpec.of(torch.randn(2, 8, 8, 16), layout="NHWC", input_size=32).reduction == 4
    assert BoundarySpec.of(torch.randn(2, 16, 8, 8), input_size=32).layout == "NCHW"
    with pytest.raises(ConfigError, match="valid layouts for it: NLC"):
        BoundarySpec.of(t, layout="NHWC")


def test_dicts_round_trip_and_old_cards_load() -> None:
    for spec in SPECS.values():
        assert BoundarySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # Cards written before grids existed: NCHW / NC dicts are unchanged, NLC ones gain the inference.
    old_map = {"shape": [256, 6, 6], "dtype": "float32", "layout": "NCHW", "name": "a.4", "reduction": 37,
               "channels": 256}
    assert BoundarySpec.from_dict(old_map).to_dict() == old_map
    old_tokens = {"shape": [50, 32], "dtype": "float32", "layout": "NLC", "name": "t", "reduction": 1}
    assert BoundarySpec.from_dict(old_tokens).grid == (7, 7)
    assert BoundarySpec.from_dict({"shape": [10], "layout": "NC"}).layout == "NC"


def test_hints_tell_nhwc_from_nchw_by_shape_then_by_model() -> None:
    hints = LayoutHints(input_hw=(32, 32))
    assert hints.map_layout((8, 8, 96)) == "NHWC"
    assert hints.map_layout((96, 8, 8)) == "NCHW"
    assert hints.map_layout((8, 8, 8)) == "NCHW"  # ambiguous: the model's hint, NCHW by default
    assert LayoutHints(maps="NHWC", input_hw=(32, 32)).map_layout((8, 8, 8)) == "NHWC"
    assert LayoutHints(maps="NHWC", input_hw=(32, 32)).map_layout((96, 8, 8)) == "NCHW"
    vit = LayoutHints(grid=(4, 4), prefix_tokens=1)
    assert vit.spec(torch.randn(2, 17, 8)).grid == (4, 4)
    assert vit.spec(torch.randn(2, 5, 8)).grid == (2, 2)  # another grid: the hint's prefix count fits
    assert vit.spec(torch.randn(2, 16, 8)).prefix_tokens == 0  # pooled away: inferred


# -- tiny ViT and Swin services through a test splitter ---------------------------------------
class ViTStem(nn.Module):
    """patch_embed, class token and position embedding (timm's _pos_embed, default config)."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.patch_embed, self.norm_pre = vit.patch_embed, vit.norm_pre
        self.cls_token, self.pos_embed = vit.cls_token, vit.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm_pre(x)


class ViTHead(nn.Module):
    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.norm, self.fc_norm, self.head = vit.norm, vit.fc_norm, vit.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc_norm(self.norm(x)[:, 0]))


class TransformerUnits(UnitSplitter):
    """The test's own splitter: stem / transformer blocks (or Swin stages) / head."""

    name = "test_transformers"
    architectures = ("vit", "swin")
    default_blocks = 4

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, (VisionTransformer, SwinTransformer))

    def units(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        if isinstance(model, VisionTransformer):
            blocks = [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)]
            return [("stem", ViTStem(model)), *blocks, ("head", ViTHead(model))]
        stages = [(f"layers.{i}", s) for i, s in enumerate(model.layers)]
        return [("patch_embed", model.patch_embed), *stages, ("head", nn.Sequential(model.norm, model.head))]


class Plugin:
    @hookimpl
    def codenn_register_splitters(self, register: Callable[..., None]) -> None:
        register(TransformerUnits())
        register(TinySplitter())


@pytest.fixture(scope="module")
def model_plugins() -> Plugins:
    return create_plugins(load_entry_points=False, extra=[links_module, Plugin()])


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10)


def tiny_swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(img_size=32, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                           window_size=2, num_classes=10)


def test_vit_and_swin_services_publish_their_layouts(model_plugins: Plugins) -> None:
    vit = Service("vit", tiny_vit(), input_shape=(3, 32, 32), plugins=model_plugins)
    assert [b.summary() for b in vit.boundaries] == ["NLC (17, 64) grid 4x4 prefix 1"] * 3 + ["NC (10,)"]
    assert vit.boundaries[0].reduction == 8
    swin = Service("swin", tiny_swin(), input_shape=(3, 32, 32), plugins=model_plugins)
    assert [b.layout for b in swin.boundaries] == ["NHWC", "NHWC", "NHWC", "NC"]
    assert swin.boundaries[2].shape == (4, 4, 32)
    for service in (vit, swin):
        card = service.card
        assert ServiceCard.from_json(card.to_json()) == card
    assert '"grid": [\n        4,\n        4\n      ]' in vit.card.to_json()


# -- every pair: shape, gradients, least squares -----------------------------------------------
@pytest.mark.parametrize("factory", LAYOUT_FACTORIES)
@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_every_pair_maps_a_batch_and_trains(link_plugins: Plugins, factory: str, src: str, dst: str) -> None:
    link = build(link_plugins, src, dst, factory)
    assert isinstance(link, ConvLink) and link.kind == factory
    assert not any(True for _ in link.resample.parameters())  # the adapter holds no parameters
    x = SPECS[src].example(batch=4, seed=1)
    link.train()
    y = link(x)
    assert tuple(y.shape) == (4, *SPECS[dst].shape)
    F.mse_loss(y, torch.randn_like(y)).backward()
    for name, p in link.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_least_squares_fits_a_linear_target(link_plugins: Plugins, src: str, dst: str) -> None:
    """A linear link fitted on the same adapted inputs recovers another linear link's map."""
    torch.manual_seed(1)
    teacher = build(link_plugins, src, dst, "linear")
    torch.manual_seed(2)
    link = build(link_plugins, src, dst, "linear")
    assert linear_head(link) is not None
    x = SPECS[src].example(batch=64, seed=3)
    with torch.no_grad():
        target = teacher(x)
        before = F.mse_loss(link(x), target).item()
    assert least_squares_init(link, x, target, ridge=1e-6)
    with torch.no_grad():
        after = F.mse_loss(link(x), target).item()
    assert after < 1e-3 * before, (before, after)


def test_mlp_is_not_fitted_by_least_squares(link_plugins: Plugins) -> None:
    link = build(link_plugins, "NCHW", "NLC-cls", "mlp")
    x = SPECS["NCHW"].example(batch=8)
    assert not least_squares_init(link, x, torch.randn(8, 17, 32))


# -- what the adapter does ---------------------------------------------------------------------
def identity_link(plugins: Plugins, src: BoundarySpec, dst: BoundarySpec, **options: object) -> ConvLink:
    link = codenn.build_link(src, dst, "linear", plugins=plugins, **options)
    assert isinstance(link, ConvLink)
    layer = linear_head(link)
    assert layer is not None
    with torch.no_grad():
        layer.weight.copy_(torch.eye(layer.weight.shape[0]).reshape(layer.weight.shape))
        layer.bias.zero_()
    return link


def test_adapter_permutes_and_handles_prefix_tokens(link_plugins: Plugins) -> None:
    nhwc, nchw = BoundarySpec((4, 4, 8), layout="NHWC"), BoundarySpec((8, 4, 4))
    x = nhwc.example(batch=2)
    assert torch.equal(identity_link(link_plugins, nhwc, nchw)(x), x.permute(0, 3, 1, 2))
    x = nchw.example(batch=2)
    assert torch.equal(identity_link(link_plugins, nchw, nhwc)(x), x.permute(0, 2, 3, 1))
    tokens = BoundarySpec((17, 8), layout="NLC")
    t = tokens.example(batch=2)
    torch.testing.assert_close(identity_link(link_plugins, tokens, tokens)(t), t)
    pooled = identity_link(link_plugins, tokens, tokens, prefix="pool")(t)
    torch.testing.assert_close(pooled[:, 0], t[:, 1:].mean(1))
    torch.testing.assert_close(pooled[:, 1:], t[:, 1:])
    flat = BoundarySpec((8,), layout="NC")
    torch.testing.assert_close(identity_link(link_plugins, tokens, flat)(t), t[:, 0])
    torch.testing.assert_close(identity_link(link_plugins, tokens, flat, prefix="pool")(t), t[:, 1:].mean(1))
    grid = identity_link(link_plugins, tokens, nchw)(t)  # tokens -> map: class token dropped
    torch.testing.assert_close(grid, t[:, 1:].transpose(1, 2).reshape(2, 8, 4, 4))
    as_tokens = identity_link(link_plugins, nchw, tokens)(grid)  # map -> tokens: prefix = mean
    torch.testing.assert_close(as_tokens[:, 1:], t[:, 1:])
    torch.testing.assert_close(as_tokens[:, 0], t[:, 1:].mean(1))
    assert isinstance(identity_link(link_plugins, tokens, nchw).resample, LayoutAdapter)


def test_grid_resampling_modes(link_plugins: Plugins) -> None:
    down = build(link_plugins, "NLC", "NLC-cls", "linear")  # 8x8 -> 4x4
    up = build(link_plugins, "NLC-cls", "NLC", "linear", resample="interpolate")
    assert isinstance(down, ConvLink) and isinstance(up, ConvLink)
    assert "maxpool" in down.resample_mode and "interpolate" in up.resample_mode
    avg = build(link_plugins, "NLC", "NLC-cls", "linear", resample="pool", pool_mode="avg")
    assert isinstance(avg, ConvLink) and "avgpool" in avg.resample_mode


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("factory", OLD_FACTORIES)
@pytest.mark.parametrize(("src", "dst"), [("NLC-cls", "NCHW"), ("NHWC", "NC"), ("NCHW", "NHWC")])
def test_conv_factories_name_both_layouts_and_who_can(
    link_plugins: Plugins, factory: str, src: str, dst: str
) -> None:
    with pytest.raises(BoundaryMismatchError) as info:
        build(link_plugins, src, dst, factory)
    msg = str(info.value)
    assert SPECS[src].layout in msg and SPECS[dst].layout in msg and factory in msg
    assert "'linear', 'mlp'" in msg


@pytest.mark.parametrize("factory", OLD_FACTORIES)
def test_conv_factories_keep_their_meaning_on_nchw(link_plugins: Plugins, factory: str) -> None:
    link = build(link_plugins, "NCHW", "NCHW-small", factory)
    assert isinstance(link, ConvLink) and not isinstance(link.resample, LayoutAdapter)


def test_layout_links_refuse_what_they_cannot_join(link_plugins: Plugins) -> None:
    seq = BoundarySpec((31, 8), layout="NLC", name="text")  # no grid can be inferred
    with pytest.raises(BoundaryMismatchError, match=r"NLC \(tokens\) \(31, 8\).*NCHW \(map\)"):
        codenn.build_link(seq, SPECS["NCHW"], "linear", plugins=link_plugins)
    same = codenn.build_link(seq, BoundarySpec((31, 4), layout="NLC"), "linear", plugins=link_plugins)
    assert same(seq.example())[0].shape == (31, 4)
    with pytest.raises(ConfigError, match="resample='conv'"):
        build(link_plugins, "NLC", "NLC-cls", "linear", resample="conv")
    with pytest.raises(ConfigError, match="prefix='drop'"):
        build(link_plugins, "NLC-cls", "NLC", "mlp", prefix="drop")
    with pytest.raises(ConfigError, match="class token"):
        build(link_plugins, "NLC-cls", "NC", "linear", flat_pool=2)
    with pytest.raises(ConfigError, match="valid options"):
        build(link_plugins, "NLC-cls", "NC", "linear", width=3)


def test_layout_factories_registered(link_plugins: Plugins) -> None:
    assert tuple(LAYOUT_LINKS) == LAYOUT_FACTORIES
    for name in LAYOUT_FACTORIES:
        assert link_plugins.link_factories.owner(name) == links_module.__name__


# -- CNN <-> ViT cross paths end to end --------------------------------------------------------
@pytest.mark.parametrize(
    "spec", ["cnn[:2] > vit[1:3] > cnn[4:]", "vit[:2] > cnn[2:4] > vit[3:]"]
)
def test_cnn_vit_cross_path_trains(model_plugins: Plugins, spec: str) -> None:
    torch.manual_seed(0)
    cnn = Service("cnn", TinyCNN(10), input_shape=(3, 32, 32), plugins=model_plugins)
    vit = Service("vit", tiny_vit(), input_shape=(3, 32, 32), plugins=model_plugins)
    path = ComposedPath(spec, [cnn, vit], link="linear", plugins=model_plugins)
    inputs, labels = torch.randn(48, 3, 32, 32), torch.randint(0, 10, (48,))
    cache = FeatureCache({"cnn": cnn, "vit": vit}, inputs)
    assert init_path_links(path, cache, samples=48, ridge=1e-3) == [True, True]
    assert path(inputs[:4]).shape == (4, 10)
    config = TrainConfig(epochs=1, batch_size=16, progress=False)
    trainer = LinkTrainer(path, config, cache, labels)
    before = [p.detach().clone() for p in path.trainable_parameters()]
    loss = trainer.train_epochs(1)
    assert loss == loss  # not NaN
    after = list(path.trainable_parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


def test_generic_splitter_boundaries_feed_layout_links() -> None:
    """With the registered generic (fx) splitter: ViT tokens and Swin NHWC maps, joined to a CNN."""
    plugins = tiny_plugins()
    if "fx" not in plugins.splitters.names():
        pytest.skip("the generic fx splitter is not registered")
    vit = Service("vit", tiny_vit(), input_shape=(3, 32, 32), num_blocks=3, plugins=plugins)
    swin = Service("swin", tiny_swin(), input_shape=(3, 32, 32), num_blocks=3, plugins=plugins)
    assert {b.layout for b in vit.boundaries[:-1]} == {"NLC"}
    assert all(b.grid == (4, 4) and b.prefix_tokens == 1 for b in vit.boundaries[:-1])
    assert {b.layout for b in swin.boundaries if len(b.shape) == 3} == {"NHWC"}
    cnn = Service("cnn", TinyCNN(10), input_shape=(3, 32, 32), plugins=plugins)
    inputs = torch.randn(32, 3, 32, 32)
    cache = FeatureCache({"cnn": cnn, "vit": vit, "swin": swin}, inputs)
    for spec in ("cnn[:2] > vit[1:2] > cnn[4:]", "cnn[:2] > swin[1:2] > cnn[4:]"):
        path = ComposedPath(spec, [cnn, vit, swin], link="linear", plugins=plugins)
        assert init_path_links(path, cache, samples=32, ridge=1e-3) == [True, True]
        assert path(inputs[:4]).shape == (4, 10)
