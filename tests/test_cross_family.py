"""Cross paths across families (issue 11, item 4): CNN local with a ViT host, the reverse, and a
Swin host, each cut by the generic splitter, joined by `linear` links, trained links-only, and
exported per provider side with parity and the no-foreign-parameter check."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from codenn import Service
from codenn.config.train import TrainConfig
from codenn.paths.composed import ComposedPath
from codenn.train.features import FeatureCache
from codenn.train.lstsq import init_path_links
from codenn.train.trainer import LinkTrainer
from codenn_adapters.onnx_export import export_path

pytestmark = [pytest.mark.onnx, pytest.mark.usefixtures("one_torch_thread")]
SIZE = 32


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    torch.manual_seed(0)
    models = {
        "cnn": torchvision.models.resnet18(num_classes=10),
        "vit": VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=64, depth=3, num_heads=2, num_classes=10),
        "swin": SwinTransformer(img_size=SIZE, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                                window_size=2, num_classes=10),
    }
    return {name: Service(name, model, input_shape=(3, SIZE, SIZE)) for name, model in models.items()}


CASES = {
    "cnn > vit > cnn": "cnn[:2] > vit[1:3] > cnn[4:]",
    "vit > cnn > vit": "vit[:2] > cnn[2:4] > vit[3:]",
    "cnn > swin > cnn": "cnn[:3] > swin[1:3] > cnn[4:]",
}


def test_transformers_are_cut_by_the_generic_splitter_with_their_layouts(services) -> None:
    vit, swin = services["vit"], services["swin"]
    assert vit.splitter_name == swin.splitter_name == "fx"
    token = vit.boundaries[1]
    assert (token.layout, token.grid, token.prefix_tokens) == ("NLC", (4, 4), 1)
    assert "NHWC" in {b.layout for b in swin.boundaries}


@pytest.mark.parametrize("case", CASES)
def test_cross_family_path_trains_links_only_and_exports_per_side(services, case, tmp_path) -> None:
    spec = CASES[case]
    local = spec.split("[")[0]
    torch.manual_seed(0)
    path = ComposedPath(spec, services, link="linear")
    before = {n: s.fingerprint() for n, s in path.services.items()}
    x = torch.randn(48, 3, SIZE, SIZE)
    y = torch.randint(0, 10, (48,))
    flags = init_path_links(path, FeatureCache(dict(path.services.items()), x), samples=32, ridge=1e-3)
    assert all(flags)  # every `linear` link is one linear map: least squares initialises it
    trainer = LinkTrainer(path, TrainConfig(epochs=1, batch_size=16, progress=False),
                          FeatureCache(dict(path.services.items()), x), y)
    trainer.train_epochs(1)
    assert {n: s.fingerprint() for n, s in path.services.items()} == before

    result = export_path(path.eval(), tmp_path / "onnx", real_inputs=x[:4], log=lambda m: None)
    names = {f.name for f in result.files}
    host = next(s.service for s in path.spec.segments if s.service != local)
    assert {"local-0.onnx", f"host-{host}.onnx", "local-1.onnx", "merged.onnx"} <= names
    assert result.parity and all(p.ok and p.rel <= 1e-4 for p in result.parity)
    assert {c.file for c in result.leaks} >= {"local-0.onnx", f"host-{host}.onnx", "local-1.onnx"}


def test_a_timm_zoo_vit_builds_without_downloading() -> None:
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, patch_size=8, depth=2)
    service = Service("deit", model, input_shape=(3, SIZE, SIZE))
    assert service.splitter_name == "fx" and service.num_blocks >= 3
