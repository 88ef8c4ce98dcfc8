"""Paths on real models: forward and backward, frozen fingerprints, accounting, path space."""

from __future__ import annotations

import pytest
import torch
import torchvision

from codenn import BoundaryMismatchError, ConfigError, PathSpecError, Service
from codenn.paths.composed import ComposedPath
from codenn.paths.space import PathSpace
from codenn.testing import check_path_trains_links_only

SIZE = (3, 64, 64)


@pytest.fixture(scope="module")
def services():
    torch.manual_seed(0)
    local = Service("alexnet", torchvision.models.alexnet(num_classes=10), input_shape=SIZE)
    host = Service("mobilenet_v2", torchvision.models.mobilenet_v2(num_classes=7), input_shape=SIZE)
    return local, host


def test_cross_path_alexnet_mobilenet_alexnet_forward_backward(services) -> None:
    local, host = services
    fp = (local.fingerprint(), host.fingerprint())
    path = ComposedPath("alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]", [local, host])
    path.train()
    x = torch.randn(6, *SIZE)
    logits = path(x)
    assert logits.shape == (6, 10)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 10, (6,))).backward()
    assert all(p.grad is not None for p in path.trainable_parameters())
    assert all(p.grad is None for p in local.parameters()) and all(p.grad is None for p in host.parameters())
    assert (local.fingerprint(), host.fingerprint()) == fp
    path.check_frozen()
    assert {id(p) for p in path.parameters() if p.requires_grad} == {id(p) for p in path.trainable_parameters()}


def test_skip_path_forward_backward_and_optimizer_step_keeps_blocks_frozen(services) -> None:
    local, _ = services
    before = local.fingerprint()
    path = ComposedPath("alexnet[:2] > alexnet[4:]", [local])
    opt = torch.optim.SGD(path.parameters(), lr=0.1)  # even handed every parameter
    for _ in range(2):
        opt.zero_grad()
        path(torch.randn(4, *SIZE)).square().mean().backward()
        opt.step()
    assert local.fingerprint() == before
    check_path_trains_links_only(path)
    assert path.link_sides == ("alexnet",)


def test_train_mode_does_not_reach_frozen_blocks(services) -> None:
    local, host = services
    path = ComposedPath("alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]", [local, host]).train()
    assert path.links[0].training
    assert not any(m.training for m in local.modules()) and not any(m.training for m in host.modules())
    x = torch.randn(2, *SIZE)
    # dropout off in frozen blocks: the local tail is deterministic in train mode
    mid = path.links[1](host.run(path.links[0](local.run(x, 0, 1)), 1, 4))
    torch.testing.assert_close(local.run(mid, 5), local.run(mid, 5))


def test_stats_match_the_paper_quantities(services) -> None:
    local, host = services
    path = ComposedPath("alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]", [local, host])
    st = path.stats()
    card = local.card
    assert st.local_blocks_used == (0, 5, 6) and st.local_blocks_skipped == (1, 2, 3, 4)
    assert st.host_blocks_used == {"mobilenet_v2": (1, 2, 3)}
    assert st.skipped_params == sum(card.blocks[b].params for b in (1, 2, 3, 4))
    assert st.link_params == sum(p.numel() for p in path.links.parameters()) == st.host_link_params
    assert st.local_link_params == 0  # cross links live on the host (paper, Section III-C)
    assert st.host_params == st.host_link_params + sum(host.card.blocks[b].params for b in (1, 2, 3))
    assert path.link_sides == ("mobilenet_v2", "mobilenet_v2")
    # what crosses: the local boundary 0 to the host, the local block-5 input back
    assert st.boundary_bytes == (card.boundaries[0].nbytes, card.boundaries[4].nbytes)
    assert path.links_on("alexnet") == []


def test_link_choice_by_name_and_custom_links(services) -> None:
    local, host = services
    path = ComposedPath("alexnet[:2] > alexnet[4:]", [local], link="reduced5")
    assert path.link_factories == ("reduced5",)
    src, dst = path.link_specs[0]
    bad = torch.nn.Conv2d(src.channels, dst.channels + 1, 1)
    with pytest.raises(BoundaryMismatchError, match="expects"):
        ComposedPath("alexnet[:2] > alexnet[4:]", [local], links=[bad])
    with pytest.raises(ConfigError, match="needs 1 links"):
        ComposedPath("alexnet[:2] > alexnet[4:]", [local], links=[])


def test_unknown_service_and_bad_input(services) -> None:
    local, host = services
    with pytest.raises(PathSpecError, match="unknown service 'vgg'"):
        ComposedPath("alexnet[:2] > vgg[1:2] > alexnet[4:]", [local, host])
    path = ComposedPath("alexnet[:2] > alexnet[4:]", [local])
    with pytest.raises(BoundaryMismatchError, match=r"shape \(3, 32, 32\).*expects shape \(3, 64, 64\)"):
        path(torch.randn(1, 3, 32, 32))


def test_chain_through_two_hosts(services) -> None:
    local, host = services
    resnet = Service("resnet18", torchvision.models.resnet18(num_classes=3), input_shape=SIZE)
    path = ComposedPath("alexnet[:1] > mobilenet_v2[1:3] > resnet18[3:5] > alexnet[5:]", [local, host, resnet])
    assert path.spec.hosts == ("mobilenet_v2", "resnet18")
    assert path.link_sides == ("mobilenet_v2", "resnet18", "resnet18")
    check_path_trains_links_only(path)


def test_path_space_counts(services) -> None:
    local, host = services
    space = PathSpace.between(local, [host])
    counts = space.counts()
    n, m = local.num_blocks, host.num_blocks
    pairs = sum(1 for lout in range(n - 1) for lin in range(lout + 2, n))
    assert counts == {"skip": pairs, "cross": pairs * m * (m + 1) // 2, "total": pairs * (1 + m * (m + 1) // 2)}
    specs = list(space)
    assert len(set(map(str, specs))) == len(specs)
    # every enumerated spec is a valid path for these services
    for spec in specs[:: max(1, len(specs) // 25)]:
        spec.resolve({"alexnet": n, "mobilenet_v2": m})
    fixed = PathSpace.between(local, [host], hin=1, skip=False)
    assert all(s.indices.hin == 1 for s in fixed)
    two = PathSpace.between(local, [host, local.__class__("h2", torchvision.models.alexnet(), input_shape=SIZE)],
                            max_hosts=2, skip=False, hin=1, hout=2)
    assert two.counts()["cross"] == pairs * (2 + 2)  # 2 single-host + 2 ordered two-host chains
