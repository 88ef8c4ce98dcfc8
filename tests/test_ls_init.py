"""Least-squares initialisation of every link kind (codenn.train.least_squares_init).

Two-layer links (bottleneck, reduced25 / reduced5, mlp with ReLU or no activation) are fitted by
reduced-rank ridge regression and factored by SVD; a ReLU in the middle is passed with
relu(z) - relu(-z) = z. On targets that are a known linear map of rank <= r the fit is exact.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import codenn
from codenn import BoundarySpec
from codenn.contracts.plugins import Plugins, create_plugins
from codenn.paths.composed import ComposedPath
from codenn.train.data import tensors
from codenn.train.features import FeatureCache
from codenn.train.lstsq import init_path_links, least_squares_init
from codenn.train.trainer import accuracy
from codenn_plugins import links as links_module
from codenn_plugins.links import ConvLink

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KINDS = ("conv1x1", "conv3x3", "paper", "bottleneck", "reduced25", "reduced5")


@pytest.fixture(scope="module")
def link_plugins() -> Plugins:
    return create_plugins(load_entry_points=False, extra=[links_module])


def nchw(c: int, h: int, w: int | None = None) -> BoundarySpec:
    return BoundarySpec((c, h, h if w is None else w))


def flat(n: int) -> BoundarySpec:
    return BoundarySpec((n,), layout="NC")


def build(plugins: Plugins, src: BoundarySpec, dst: BoundarySpec, name: str, **options: object) -> ConvLink:
    link = codenn.build_link(src, dst, name, plugins=plugins, **options)
    assert isinstance(link, ConvLink)
    return link


def low_rank(rows: int, cols: int, rank: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g) / cols**0.5


def conv_map(cin: int, cout: int, k: int, rank: int, g: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """A random rank-``rank`` k x k conv (cout x cin*k*k) with a bias, padding k // 2."""
    w = low_rank(cout, cin * k * k, rank, g).reshape(cout, cin, k, k)
    b = torch.randn(cout, generator=g)
    return lambda x: F.conv2d(x, w, b, padding=k // 2)


def conv_target(x: torch.Tensor, cout: int, k: int, rank: int, g: torch.Generator) -> torch.Tensor:
    return conv_map(x.shape[1], cout, k, rank, g)(x)


def flat_target(x: torch.Tensor, cout: int, rank: int, g: torch.Generator) -> torch.Tensor:
    return x @ low_rank(cout, x.shape[1], rank, g).T + torch.randn(cout, generator=g)


def rel_err(link: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    link.eval()
    with torch.no_grad():
        return float((link(x) - target).norm() / target.norm())


def state(link: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in link.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- exact recovery of a rank-r linear map ------------------------------------------------------
# (factory, options, src, dst, target kernel, target rank): the rank is the most the link holds,
# width for a linear middle and width // 2 through a ReLU (bottleneck width: max(8, min // 4)).
MAPS = {
    "bottleneck relu 1x1": ("bottleneck", {}, nchw(32, 8), nchw(32, 8), 1, 4),
    "bottleneck linear 1x1": ("bottleneck", {"activation": "none"}, nchw(32, 8), nchw(32, 8), 1, 8),
    "bottleneck relu odd width": ("bottleneck", {"width": 9}, nchw(16, 8), nchw(20, 8), 1, 4),
    "bottleneck kernel 3": ("bottleneck", {"kernel": 3}, nchw(16, 8), nchw(24, 8), 1, 4),
    "paper (bottleneck)": ("paper", {}, nchw(32, 8), nchw(32, 8), 1, 4),
    "reduced25 3x3": ("reduced25", {}, nchw(32, 8), nchw(40, 8), 3, 25),
    "reduced5 3x3": ("reduced5", {}, nchw(16, 8), nchw(24, 8), 3, 5),
    "reduced5 relu 3x3": ("reduced5", {"activation": "relu"}, nchw(16, 8), nchw(24, 8), 3, 2),
    "reduced25 kernel 1": ("reduced25", {"kernel": 1}, nchw(32, 8), nchw(40, 8), 1, 25),
    "reduced25 relu kernel 5": ("reduced25", {"activation": "relu", "kernel": 5}, nchw(8, 8), nchw(16, 8), 5, 12),
}


@pytest.mark.parametrize("case", list(MAPS))
def test_two_layer_links_recover_a_rank_r_conv_map(link_plugins: Plugins, case: str) -> None:
    factory, options, src, dst, k, rank = MAPS[case]
    g = torch.Generator().manual_seed(1)
    link = build(link_plugins, src, dst, factory, **options)
    assert len(link.body) > 1
    x = torch.randn(16, *src.shape, generator=g)
    fn = conv_map(src.channels, dst.channels, k, rank, g)
    target = fn(x)
    before = rel_err(link, x, target)
    link.train()
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert link.training  # modes are restored
    after = rel_err(link, x, target)
    assert after < 1e-3 < before, (before, after)
    # held-out inputs: the map itself was recovered, not just the calibration outputs
    x2 = torch.randn(16, *src.shape, generator=g)
    assert rel_err(link, x2, fn(x2)) < 1e-3


def test_reduced_link_centre_tap_and_relu_split_layout(link_plugins: Plugins) -> None:
    link = build(link_plugins, nchw(8, 6), nchw(12, 6), "reduced5", activation="relu")
    first, second = link.body[0], link.body[-1]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 8, 6, 6, generator=g)
    assert least_squares_init(link, x, conv_target(x, 12, 3, 2, g), ridge=1e-8)
    w1 = first.weight.detach()
    torch.testing.assert_close(w1[2:4], -w1[0:2])  # rows [A; -A]
    assert torch.count_nonzero(first.bias[:4]) == 0  # the bias lives in the second layer
    w2 = second.weight.detach()
    torch.testing.assert_close(w2[:, 2:4, 1, 1], -w2[:, 0:2, 1, 1])  # columns [B, -B]
    off_centre = w2.clone()
    off_centre[:, :, 1, 1] = 0
    assert torch.count_nonzero(off_centre) == 0
    assert torch.count_nonzero(w2[:, 4:]) == 0  # the spare channel is read with zero weights
    assert torch.count_nonzero(w1[4:]) > 0  # ... but keeps its random row, so it still learns


FLAT = {
    "nc->nc bottleneck relu": ("bottleneck", {}, flat(40), flat(24), 4),
    "nc->nc bottleneck linear": ("bottleneck", {"activation": "none"}, flat(40), flat(24), 8),
    "nc->nc same (paper)": ("paper", {}, flat(40), flat(40), 5),
    "nc->nc reduced5": ("reduced5", {}, flat(40), flat(24), 5),
    "nc->nc reduced25 relu": ("reduced25", {"activation": "relu"}, flat(40), flat(30), 12),
    "nc->nc mlp relu": ("mlp", {"activation": "relu", "width": 12}, flat(40), flat(24), 6),
    "nc->nc mlp linear": ("mlp", {"activation": "none", "width": 12}, flat(40), flat(24), 12),
}


@pytest.mark.parametrize("case", list(FLAT))
def test_flat_two_layer_links_recover_a_rank_r_map(link_plugins: Plugins, case: str) -> None:
    factory, options, src, dst, rank = FLAT[case]
    g = torch.Generator().manual_seed(3)
    link = build(link_plugins, src, dst, factory, **options)
    assert isinstance(link.body[0], nn.Linear) and isinstance(link.body[-1], nn.Linear)
    x = torch.randn(128, *src.shape, generator=g)
    target = flat_target(x, dst.numel, rank, g)
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert rel_err(link, x, target) < 1e-3


def test_flat_layout_changes(link_plugins: Plugins) -> None:
    """NCHW -> NC (global average pool, Linear, Linear) and NC -> NCHW (Linear, Linear, Unflatten)."""
    g = torch.Generator().manual_seed(4)
    link = build(link_plugins, nchw(16, 6), flat(32), "bottleneck")
    x = torch.randn(96, 16, 6, 6, generator=g)
    target = flat_target(x.mean((2, 3)), 32, 4, g)
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert rel_err(link, x, target) < 1e-3

    link = build(link_plugins, flat(40), nchw(8, 3), "reduced5")
    x = torch.randn(96, 40, generator=g)
    target = flat_target(x, 72, 5, g).reshape(96, 8, 3, 3)
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert rel_err(link, x, target) < 1e-3


RESAMPLED = {  # (factory, options, src, dst, what the target does to x before the rank-r map)
    "maxpool 16->8": ("bottleneck", {}, nchw(16, 16), nchw(24, 8), lambda x: F.max_pool2d(x, 2)),
    "avgpool 16->4": ("reduced5", {"pool_mode": "avg", "kernel": 1}, nchw(8, 16), nchw(12, 4),
                      lambda x: F.avg_pool2d(x, 4)),
    "bilinear 6->13": ("bottleneck", {"activation": "none"}, nchw(16, 6), nchw(8, 13),
                       lambda x: F.interpolate(x, size=(13, 13), mode="bilinear", align_corners=False)),
    "adaptive 13->6": ("reduced5", {"resample": "pool"}, nchw(16, 13), nchw(16, 6),
                       lambda x: F.adaptive_max_pool2d(x, 6)),
}


@pytest.mark.parametrize("case", list(RESAMPLED))
def test_resampling_links_recover_a_rank_r_map(link_plugins: Plugins, case: str) -> None:
    factory, options, src, dst, resample = RESAMPLED[case]
    g = torch.Generator().manual_seed(5)
    link = build(link_plugins, src, dst, factory, **options)
    x = torch.randn(16, *src.shape, generator=g)
    k = link.body[0].kernel_size[0]
    rank = 2 if factory == "reduced5" else 4
    target = conv_target(resample(x), dst.channels, k, rank, g)
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert rel_err(link, x, target) < 1e-3


def test_strided_first_conv(link_plugins: Plugins) -> None:
    """resample='conv': the first conv is 2x2 stride 2; a rank-4 2x2 stride-2 map is recovered."""
    link = build(link_plugins, nchw(16, 16), nchw(24, 8), "bottleneck", resample="conv")
    assert link.body[0].stride == (2, 2) and link.body[0].kernel_size == (2, 2)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(16, 16, 16, 16, generator=g)
    w = low_rank(24, 16 * 4, 4, g).reshape(24, 16, 2, 2)
    target = F.conv2d(x, w, torch.randn(24, generator=g), stride=2)
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert rel_err(link, x, target) < 1e-3


def test_fewer_rows_than_columns(link_plugins: Plugins) -> None:
    """The dual ridge form: 32 samples, 301 columns; the fit is finite and matches the data."""
    link = build(link_plugins, flat(300), flat(300), "bottleneck")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(32, 300, generator=g)
    target = flat_target(x, 300, 4, g)
    before = rel_err(link, x, target)
    assert least_squares_init(link, x, target, ridge=1e-6)
    assert all(torch.isfinite(p).all() for p in link.parameters())
    assert rel_err(link, x, target) < 1e-2 < before


def test_best_rank_r_fit_of_a_higher_rank_map(link_plugins: Plugins) -> None:
    """A rank-16 target through a rank-5 link: the fit is the best rank-5 one for the data."""
    link = build(link_plugins, flat(24), flat(16), "reduced5")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(512, 24, generator=g) * torch.linspace(0.1, 3, 24)
    target = flat_target(x, 16, 16, g)
    assert least_squares_init(link, x, target, ridge=1e-9)
    # reference: the rank-5 truncation of the centred least-squares fitted values
    xc, tc = x - x.mean(0), target - target.mean(0)
    fitted = xc @ torch.linalg.lstsq(xc, tc).solution
    u, s, vh = torch.linalg.svd(fitted, full_matrices=False)
    best = ((tc - (u[:, :5] * s[:5]) @ vh[:5]).norm() / target.norm()).item()
    assert rel_err(link, x, target) == pytest.approx(best, rel=1e-3)


# -- BatchNorm in the middle --------------------------------------------------------------------
@pytest.mark.parametrize("factory", ["bottleneck", "reduced5"])
def test_norm_is_set_to_the_identity(link_plugins: Plugins, factory: str) -> None:
    """norm=True: the BN gets the middle's statistics as running stats and weight sqrt(var + eps),
    bias mean, so it is the identity in eval mode and on a training batch of the same data."""
    link = build(link_plugins, nchw(16, 8), nchw(24, 8), factory, norm=True)
    norm = link.body[1]
    assert isinstance(norm, nn.BatchNorm2d) and link.body[0].bias is None
    g = torch.Generator().manual_seed(10)
    x = torch.randn(16, 16, 8, 8, generator=g)
    target = conv_target(x, 24, link.body[0].kernel_size[0], 2, g)
    tracked = norm.num_batches_tracked.clone()
    link.train()
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert link.training and torch.equal(norm.num_batches_tracked, tracked)  # no BN update in the fit
    assert rel_err(link, x, target) < 1e-3  # eval mode: running statistics
    with torch.no_grad():
        middle = link.body[0](x)
    torch.testing.assert_close(norm.running_mean, middle.mean((0, 2, 3)))
    torch.testing.assert_close(norm.weight.detach() ** 2, middle.var((0, 2, 3), unbiased=False) + norm.eps)
    trained = copy.deepcopy(link).train()  # batch statistics of the same batch: the same output
    with torch.no_grad():
        assert float((trained(x) - target).norm() / target.norm()) < 1e-3


def test_flat_norm(link_plugins: Plugins) -> None:
    link = build(link_plugins, flat(40), flat(24), "bottleneck", norm=True)
    assert isinstance(link.body[1], nn.BatchNorm1d)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(128, 40, generator=g)
    target = flat_target(x, 24, 4, g)
    assert least_squares_init(link, x, target, ridge=1e-8)
    assert rel_err(link, x, target) < 1e-3


# -- what is refused, untouched -----------------------------------------------------------------
class TwoLinears(nn.Module):
    """Two Linear layers called from forward, not in an nn.Sequential: an unknown structure."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class Doubled(nn.Module):
    """A recognised body followed by a non-linear step: the structure matches, the check fails."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x))


FOREIGN = {
    "gelu middle": lambda: nn.Sequential(nn.Linear(8, 4), nn.GELU(), nn.Linear(4, 6)),
    "relu after the second layer": lambda: nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 6), nn.ReLU()),
    "three layers": lambda: nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 6)),
    "no second bias": lambda: nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 6, bias=False)),
    "layer norm": lambda: nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4), nn.Linear(4, 6)),
    "not in a sequential": TwoLinears,
    "non-linear after the body": Doubled,
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_foreign_modules_are_refused_and_untouched(case: str) -> None:
    module = FOREIGN[case]()
    module.train()
    before = state(module)
    x = torch.randn(32, 8)
    assert not least_squares_init(module, x, torch.randn(32, 6))
    assert same_state(before, state(module))
    assert module.training


def test_foreign_conv_bodies_are_refused() -> None:
    strided_second = nn.Sequential(nn.Conv2d(4, 3, 1), nn.ReLU(), nn.Conv2d(3, 5, 3, stride=2, padding=1))
    grouped = nn.Sequential(nn.Conv2d(4, 4, 1, groups=2), nn.Conv2d(4, 5, 1))
    for module in (strided_second, grouped):
        before = state(module)
        x = torch.randn(4, 4, 8, 8)
        with torch.no_grad():
            y = module(x)
        assert not least_squares_init(module, x, torch.randn_like(y))
        assert same_state(before, state(module))


def test_layout_mlp_with_gelu_is_refused(link_plugins: Plugins) -> None:
    link = build(link_plugins, flat(40), flat(24), "mlp")
    before = state(link)
    assert not least_squares_init(link, torch.randn(64, 40), torch.randn(64, 24))
    assert same_state(before, state(link))


# -- a real case: the tiny CNNs' blocks ---------------------------------------------------------
REAL_KINDS = [(k, {}) for k in KINDS] + [
    ("bottleneck", {"activation": "none"}), ("bottleneck", {"norm": True}), ("reduced5", {"activation": "relu"}),
]


@pytest.fixture(scope="module")
def tiny_case(one_torch_thread: None):
    from tiny import tiny_scenario

    local, host, splits, plugins = tiny_scenario()
    services = {"local": local, "host": host}
    xt, _ = tensors(splits.train)
    xv, yv = tensors(splits.val)
    return services, plugins, FeatureCache(services, xt), FeatureCache(services, xv), yv


def link_mse(path: ComposedPath, cache: FeatureCache) -> list[float]:
    """Each link's MSE to what its destination block normally receives, on the cache's inputs."""
    first = path.spec.segments[0]
    h0 = cache.get(path.spec.local, first.end(path.local.num_blocks))
    path.eval()
    out = []
    with torch.no_grad():
        for i, link in enumerate(path.links):
            dst = path.spec.segments[i + 1]
            out.append(F.mse_loss(link(path.forward_after_prefix(h0, upto_link=i)),
                                  cache.get(dst.service, dst.start)).item())
    return out


@pytest.mark.parametrize(("kind", "options"), REAL_KINDS, ids=[k + "".join(f"-{v}" for v in o.values())
                                                                 for k, o in REAL_KINDS])
def test_real_blocks_ls_beats_random(tiny_case, kind: str, options: dict[str, object]) -> None:
    services, plugins, train, val, yv = tiny_case
    spec = "local[:1] > host[1:3] > local[3:]"
    torch.manual_seed(0)
    random_path = ComposedPath(spec, services, link=kind, link_options=options, plugins=plugins)
    ls_path = ComposedPath(spec, services, link=kind, link_options=options, plugins=plugins)
    ls_path.load_state_dict(random_path.state_dict())
    assert init_path_links(ls_path, train, samples=256, ridge=1e-3) == [True, True]
    random_mse, ls_mse = link_mse(random_path, val), link_mse(ls_path, val)  # held-out inputs
    assert all(ls < 0.5 * r for ls, r in zip(ls_mse, random_mse)), (random_mse, ls_mse)
    random_acc, ls_acc = accuracy(random_path, val, yv), accuracy(ls_path, val, yv)
    print(f"\n{kind}{options or ''}: link MSE random {random_mse} -> LS {ls_mse}; "
          f"untrained val acc random {random_acc:.3f} -> LS {ls_acc:.3f}")
    assert ls_acc > random_acc
