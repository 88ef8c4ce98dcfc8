"""The timm feature splitter (plugin ``codenn_plugins.timm_features``) on real timm CNNs."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn

from codenn import Service, SplitError
from codenn.contracts.plugins import Plugins, create_plugins
from codenn.contracts.splitters import find_splitter
from codenn.model.blocks import FrozenBlock, run_blocks
from codenn_plugins import timm_features
from codenn_plugins.timm_features import TimmFeatureSplitter

# model name -> max_blocks (feature_info stages + head)
MODELS = {
    "resnet18": 6,
    "mobilenetv3_small_050": 6,
    "efficientnet_b0": 6,
    "regnetx_002": 6,
    "convnext_atto": 5,
}
SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make(name: str, **kwargs: object) -> nn.Module:
    # dropout and drop-path on, so train mode is stochastic and the train graph is exercised
    return timm.create_model(name, pretrained=False, num_classes=10, drop_rate=0.2, drop_path_rate=0.1,
                             **kwargs)


@pytest.fixture
def splitter() -> TimmFeatureSplitter:
    return TimmFeatureSplitter()


@pytest.fixture
def timm_plugins() -> Plugins:
    return create_plugins(load_entry_points=False, extra=[timm_features])


def run_seeded(fn: nn.Module | list[nn.Module], x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return run_blocks(fn, x) if isinstance(fn, list) else fn(x)


@pytest.mark.parametrize("name", list(MODELS))
def test_recomposes_model_in_eval_and_train(splitter: TimmFeatureSplitter, name: str) -> None:
    model = make(name)
    assert splitter.handles(model)
    top = splitter.max_blocks(model)
    assert top == MODELS[name]
    x = torch.randn(2, 3, SIZE, SIZE)
    for count in sorted({2, 3, top}):
        parts = splitter.split(model, count)
        names = [n for n, _ in parts]
        assert len(parts) == count and len(set(names)) == count and names[-1] == "head"
        model.eval()
        blocks = [m for _, m in parts]
        assert (run_seeded(blocks, x) - run_seeded(model, x)).abs().max() <= 1e-5

        # train mode on a copy (blocks deep-copied with it, so they share the copy's tensors);
        # model.train() alone must switch the blocks to their train graph
        original = copy.deepcopy(model).train()
        twin, twin_blocks = copy.deepcopy((model, blocks))
        twin.train()
        expected, got = run_seeded(original, x), run_seeded(twin_blocks, x)
        assert (expected - got).abs().max() <= 1e-5, f"{name} with {count} blocks, train mode"
        assert (run_seeded(original, x, seed=2) - expected).abs().max() > 0  # dropout really on
        # same side effects: batch-norm statistics moved identically (original ran twice: rerun)
        run_seeded(twin_blocks, x, seed=2)
        for (key, a), b in zip(original.state_dict().items(), twin.state_dict().values()):
            assert torch.equal(a, b), f"{name}: buffer {key} differs after a train step"


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_blocks_share_the_model_parameters(splitter: TimmFeatureSplitter, name: str) -> None:
    model = make(name)
    own = {p.data_ptr(): p for p in model.parameters()}
    parts = splitter.split(model, splitter.max_blocks(model))
    seen: set[int] = set()
    for _, block in parts:
        for p in block.parameters():
            assert own.get(p.data_ptr()) is p  # the very same Parameter object, not a copy
            seen.add(p.data_ptr())
    assert seen == set(own)  # and every parameter of the model lives in some block


def test_block_names_and_cuts(splitter: TimmFeatureSplitter) -> None:
    model = make("resnet18")
    assert [n for n, _ in splitter.split(model, 1)] == ["conv1..head"]
    assert [n for n, _ in splitter.split(model, 2)] == ["conv1..layer4", "head"]
    assert [n for n, _ in splitter.split(model, 3)] == ["conv1..layer2", "layer3..layer4", "head"]
    assert [n for n, _ in splitter.split(model, 6)] == [
        "conv1..act1", "maxpool..layer1", "layer2", "layer3", "layer4", "head"]
    names = [n for n, _ in splitter.split(make("convnext_atto"), 5)]
    assert names == ["stem..stages.0", "stages.1", "stages.2", "stages.3", "head"]


def test_service_with_the_plugin(timm_plugins: Plugins) -> None:
    assert "timm" in timm_plugins.splitters
    model = make("efficientnet_b0")
    x = torch.randn(2, 3, SIZE, SIZE)
    expected = model.eval()(x)
    for count in (None, 3):
        service = Service("eff", model, input_shape=(3, SIZE, SIZE), num_blocks=count, plugins=timm_plugins)
        assert service.splitter_name == "timm"
        assert service.num_blocks == (TimmFeatureSplitter.default_blocks if count is None else count)
        assert [b.layout for b in service.boundaries] == ["NCHW"] * (service.num_blocks - 1) + ["NC"]
        assert all(isinstance(b, FrozenBlock) for b in service.blocks)
        service.train()  # frozen: stays in eval, dropout off
        torch.testing.assert_close(service(x), expected, rtol=0, atol=1e-5)


def test_vit_is_refused_clearly(splitter: TimmFeatureSplitter) -> None:
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, num_classes=3)
    assert not splitter.handles(vit)
    with pytest.raises(SplitError, match="no registered splitter can cut a VisionTransformer.*timm-cnn"):
        find_splitter(vit, [splitter])
    with pytest.raises(SplitError, match="timm CNNs with NCHW feature maps: resnet, efficientnet"):
        splitter.split(vit, 2)

    class Forced(TimmFeatureSplitter):
        def handles(self, model: nn.Module) -> bool:
            return True

    # past handles(), the boundary check itself names what it got and what is supported
    with pytest.raises(SplitError, match=r"shape \(1, 17, 192\) \(tokens, NLC\).*NCHW"):
        Forced().split(vit, 2)


def test_bad_block_counts(splitter: TimmFeatureSplitter) -> None:
    model = make("regnetx_002")
    for bad in (0, -1, 7, 2.0):
        with pytest.raises(SplitError, match=r"valid block counts are 1\.\.6"):
            splitter.split(model, bad)  # type: ignore[arg-type]  # the wrong type is the point


def test_only_timm_models_with_feature_info(splitter: TimmFeatureSplitter) -> None:
    assert not splitter.handles(torchvision.models.resnet18())
    features = timm.create_model("resnet18", pretrained=False, features_only=True)
    assert not splitter.handles(features)  # returns a list of maps, not a chain


class _Skip(nn.Module):
    """A timm-looking model whose stage 2 also reads stage 0's output: a cut after stage 1 is not
    a chain, cuts after stages 0 and 2 are."""

    def __init__(self) -> None:
        super().__init__()
        self.s0 = nn.Conv2d(3, 4, 3, padding=1)
        self.s1 = nn.Conv2d(4, 4, 3, padding=1)
        self.s2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        self.feature_info = [dict(num_chs=4, reduction=1, module=m) for m in ("s0", "s1", "s2")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.s0(x)
        return self.fc(self.s2(self.s1(a) + a).mean((2, 3)))


_Skip.__module__ = "timm.models.skip_test"


def test_cut_carrying_two_tensors_is_refused(splitter: TimmFeatureSplitter) -> None:
    model = _Skip()
    assert splitter.handles(model) and splitter.max_blocks(model) == 4
    x = torch.randn(1, 3, 8, 8)
    # cutting only before the head is a chain
    parts = splitter.split(model, 2)
    assert (run_blocks([m for _, m in parts], x) - model(x)).abs().max() <= 1e-6
    with pytest.raises(SplitError, match="block 2 needs 's0' .* besides the output of 's1'.*more than one"):
        splitter.split(model, 4)


def test_a_fixed_size_timm_model_is_built_at_the_size_asked() -> None:
    """A ViT host at the scenario's 64x64 stopped `codenn search` with timm's bare
    ``AssertionError: Input height (64) doesn't match model (224)``: model loading passed no img_size."""
    from codenn import Service

    service = Service.from_name("vit_tiny_patch16_224", input_shape=(3, 64, 64))
    assert service.card.boundaries[0].shape == (17, 192)  # (64 / 16)^2 patches and the class token
    assert service(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
