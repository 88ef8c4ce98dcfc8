"""Least-squares initialisation of links: a link starts from the ridge fit of what its destination
block normally receives, not from random weights (the idea of SN-Net's ``ps_inv``; two-layer links
by reduced-rank regression factored by SVD)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codenn.paths.composed import ComposedPath
from codenn.train.features import FeatureCache


def _single_layer(link: nn.Module) -> nn.Conv2d | nn.Linear | None:
    layers = [m for m in link.modules() if any(True for _ in m.parameters(recurse=False))]
    if len(layers) != 1 or not isinstance(layers[0], (nn.Conv2d, nn.Linear)):
        return None
    layer = layers[0]
    if isinstance(layer, nn.Conv2d) and (layer.groups != 1 or layer.padding_mode != "zeros"):
        return None
    return layer


def _capture(link: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input of ``layer``, output of ``layer``, output of ``link``) on ``x``."""
    return _capture_between(link, layer, layer, x)


def _capture_between(
    link: nn.Module, first: nn.Module, last: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input of ``first``, output of ``last``, output of ``link``) on ``x``."""
    seen: dict[str, torch.Tensor] = {}

    def take_in(_m: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        seen["in"] = args[0]

    def take_out(_m: nn.Module, _args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen["out"] = out

    handles = [first.register_forward_hook(take_in), last.register_forward_hook(take_out)]
    try:
        with torch.no_grad():
            y = link(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen["in"], seen["out"], y


def _design(layer: nn.Conv2d | nn.Linear, feats: torch.Tensor) -> torch.Tensor:
    """Rows = output positions, columns = the layer's receptive field (+1 for the bias).

    A Linear acts on the last dim, so every leading position (a token of (B, N, C), a pixel of
    channel-last (B, H, W, C)) is a row, as SN-Net fits its token stitching layers.
    """
    if isinstance(layer, nn.Linear):
        a = feats.reshape(-1, layer.in_features)
    else:
        cols = F.unfold(feats, layer.kernel_size, dilation=layer.dilation, padding=_padding(layer), stride=layer.stride)
        a = cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1).double()


def _rows(layer: nn.Conv2d | nn.Linear, t: torch.Tensor) -> torch.Tensor:
    """A layer's output (or a tensor of its shape) as rows = positions, columns = channels."""
    if isinstance(layer, nn.Linear):
        return t.reshape(-1, layer.out_features)
    return t.flatten(2).transpose(1, 2).reshape(-1, t.shape[1])


def _padding(layer: nn.Conv2d) -> tuple[int, ...]:
    """A conv's padding as numbers: unfold takes no 'same' / 'valid'."""
    if not isinstance(layer.padding, str):
        return tuple(layer.padding)
    if layer.padding == "valid":
        return (0, 0)
    return tuple(d * (k - 1) // 2 for d, k in zip(layer.dilation, layer.kernel_size))


def _ridge(a: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Solve min ||a w - y||^2 + lam ||w||^2 in the primal or dual form, whichever is smaller."""
    rows, cols = a.shape
    if rows >= cols:
        gram = a.T @ a
        lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
        primal: torch.Tensor = torch.linalg.solve(gram + lam * torch.eye(cols, dtype=a.dtype, device=a.device), a.T @ y)
        return primal
    gram = a @ a.T
    lam = ridge * gram.diagonal().mean().clamp_min(1e-12)
    dual: torch.Tensor = torch.linalg.solve(gram + lam * torch.eye(rows, dtype=a.dtype, device=a.device), y)
    return a.T @ dual


def _fit_single(link: nn.Module, layer: nn.Conv2d | nn.Linear, x: torch.Tensor, target: torch.Tensor,
                ridge: float) -> bool:
    feats, out, y = _capture(link, layer, x)
    if out.numel() != y.numel() or not torch.equal(out.reshape(y.shape), y):
        return False  # something after the layer is not a pure reshape
    if target.numel() != out.numel():
        return False
    a = _design(layer, feats)
    t = _rows(layer, target.reshape(out.shape))
    if a.shape[0] != t.shape[0]:
        return False
    w = _ridge(a, t.double(), ridge)
    with torch.no_grad():
        weight, bias = w[:-1].T, w[-1]
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))
    return True


# Two-layer links: first layer -> [BatchNorm] -> [ReLU] -> second layer, in one nn.Sequential.
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_TWO_LAYER_RTOL = 1e-4  # link(x) after the fit vs the factorised prediction, relative Frobenius


@dataclass(frozen=True)
class _TwoLayer:
    first: nn.Conv2d | nn.Linear
    second: nn.Conv2d | nn.Linear
    middle: tuple[nn.Module, ...]  # ReLU, Identity, BatchNorm (at most one each of ReLU, BN)

    @property
    def width(self) -> int:
        return self.first.out_channels if isinstance(self.first, nn.Conv2d) else self.first.out_features

    @property
    def relu(self) -> bool:
        return any(isinstance(m, nn.ReLU) for m in self.middle)

    @property
    def norm(self) -> nn.BatchNorm1d | nn.BatchNorm2d | None:
        return next((m for m in self.middle if isinstance(m, _NORMS)), None)


def _same_size_conv(conv: nn.Conv2d) -> bool:
    """Stride 1, odd kernel, 'same' zero padding: output position p reads middle position p."""
    kernel, dilation = conv.kernel_size, conv.dilation
    padding = _padding(conv)
    return (
        conv.groups == 1 and conv.padding_mode == "zeros" and tuple(conv.stride) == (1, 1)
        and all(k % 2 == 1 for k in kernel)
        and tuple(padding) == tuple(d * (k // 2) for d, k in zip(dilation, kernel))
    )


def _two_layers(link: nn.Module) -> _TwoLayer | None:
    """``link``'s two linear layers and what lies between them, or None for any other structure."""
    params = [m for m in link.modules() if any(True for _ in m.parameters(recurse=False))]
    layers = [m for m in params if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(layers) != 2:
        return None
    first, second = layers
    seq = next((s for s in link.modules() if isinstance(s, nn.Sequential)
                and any(c is first for c in s) and any(c is second for c in s)), None)
    if seq is None:
        return None
    children = list(seq)
    i = next(n for n, c in enumerate(children) if c is first)
    j = next(n for n, c in enumerate(children) if c is second)
    middle = tuple(children[i + 1 : j])
    if j <= i or not all(type(m) in (nn.ReLU, nn.Identity, *_NORMS) for m in middle):
        return None
    norms = [m for m in middle if isinstance(m, _NORMS)]
    if sum(isinstance(m, nn.ReLU) for m in middle) > 1 or len(norms) > 1:
        return None
    if any(m not in (first, second, *norms) for m in params):
        return None  # a parametric module outside the two layers and the norm
    if norms and not (norms[0].affine and norms[0].track_running_stats):
        return None
    if isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d):
        if first.groups != 1 or first.padding_mode != "zeros" or not _same_size_conv(second):
            return None
        width = first.out_channels
        ok = second.in_channels == width
    elif isinstance(first, nn.Linear) and isinstance(second, nn.Linear):
        width = first.out_features
        ok = second.in_features == width
    else:
        return None
    if not ok or second.bias is None or (norms and norms[0].num_features != width):
        return None
    return _TwoLayer(first, second, middle)


class _EvalMode:
    """Put every module of ``link`` in eval mode for a while (BatchNorm must not update)."""

    def __init__(self, link: nn.Module) -> None:
        self.link = link
        self.modes = [(m, m.training) for m in link.modules()]

    def __enter__(self) -> None:
        self.link.eval()

    def __exit__(self, *_exc: object) -> None:
        for m, mode in self.modes:
            m.training = mode


def _reduced_rank(a: torch.Tensor, w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` linear map (and free bias) for the ridge fit ``w`` of design ``a``.

    Reduced-rank regression: project the map onto the top principal directions of its centred
    fitted values, ``M = W P_r P_r^T``, and keep the bias that predicts the same mean. This
    minimises ||A W - A M||_F over rank-r M (the truncated SVD of W itself minimises ||W - M||,
    which weighs the input directions by their weights rather than by their variance).
    """
    w_lin, bias = w[:-1], w[-1]
    x = a[:, :-1]
    mean = x.mean(0)
    fitted = x @ w_lin - mean @ w_lin  # centred, without a centred copy of the design
    _, vecs = torch.linalg.eigh(fitted.T @ fitted)
    p = vecs[:, -rank:]
    m = w_lin @ p @ p.T
    return m, bias + mean @ (w_lin - m)


def _fit_two_layers(link: nn.Module, two: _TwoLayer, x: torch.Tensor, target: torch.Tensor,
                    ridge: float) -> bool:
    first, second = two.first, two.second
    with _EvalMode(link):
        feats, out, y = _capture_between(link, first, second, x)
    if target.numel() != out.numel() or out.numel() != y.numel():
        return False
    a = _design(first, feats)
    t = _rows(second, target.reshape(out.shape)).double()
    if a.shape[0] != t.shape[0]:
        return False
    width, cout = two.width, t.shape[1]
    rank = min(width // 2 if two.relu else width, a.shape[1] - 1, cout)
    if rank < 1:
        return False
    m, bias = _reduced_rank(a, _ridge(a, t, ridge), rank)
    u, s, vh = torch.linalg.svd(m.T, full_matrices=False)  # (cout, cols) = U S V^T
    rank = int((s[:rank] > s[0] * 1e-7).sum()) if s[0] > 0 else 0
    if rank < 1:
        return False
    root = s[:rank].sqrt()
    left = root[:, None] * vh[:rank]  # first layer rows: sqrt(S_r) V_r^T
    right = u[:, :rank] * root  # second layer columns: U_r sqrt(S_r)
    if two.relu:  # relu(z) - relu(-z) = z: the rank-r map passes the ReLU exactly
        left, right = torch.cat([left, -left]), torch.cat([right, -right], dim=1)
    used = left.shape[0]

    # First layer: fitted rows, zero bias; unused channels keep their random rows, and the second
    # layer reads them with zero weights, so they do not change the output but still learn.
    w1 = first.weight.detach().double().reshape(width, -1).clone()
    w1[:used] = left
    new: dict[nn.Module, dict[str, torch.Tensor]] = {first: {"weight": w1.reshape(first.weight.shape)}}
    b1 = None
    if first.bias is not None:
        b1 = first.bias.detach().double().clone()
        b1[:used] = 0
        new[first]["bias"] = b1
    w2 = torch.zeros(second.weight.shape, dtype=torch.float64, device=a.device)
    if isinstance(second, nn.Conv2d):  # the centre tap; the other taps start at zero
        w2[:, :used, second.kernel_size[0] // 2, second.kernel_size[1] // 2] = right
    else:
        w2[:, :used] = right
    new[second] = {"weight": w2, "bias": bias}

    norm = two.norm
    if norm is not None:  # identity in eval mode, about identity on a training batch
        h = a[:, :-1] @ w1.T + (b1 if b1 is not None else 0)
        for mod in two.middle:
            if mod is norm:
                break
            if isinstance(mod, nn.ReLU):
                h = h.clamp_min(0)
        mu, var = h.mean(0), h.var(0, unbiased=False)
        scale = (var + norm.eps).sqrt()
        new[norm] = {"weight": scale, "bias": mu, "running_mean": mu, "running_var": var}

    names = {id(mod): name for name, mod in link.named_modules()}
    state = {
        (f"{names[id(mod)]}.{key}" if names[id(mod)] else key): value.to(getattr(mod, key).dtype)
        for mod, values in new.items() for key, value in values.items()
    }
    with _EvalMode(link), torch.no_grad():
        check = torch.func.functional_call(link, state, (x,))
    pred = a[:, :-1] @ m + bias
    if check.numel() != out.numel():
        return False
    got = _rows(second, check.reshape(out.shape)).double()
    if not torch.isfinite(got).all() or (got - pred).norm() > _TWO_LAYER_RTOL * pred.norm().clamp_min(1e-12):
        return False  # something about the link is not the structure assumed here
    with torch.no_grad():
        for mod, values in new.items():
            for key, value in values.items():
                getattr(mod, key).copy_(value)
    return True


def least_squares_init(link: nn.Module, x: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> bool:
    """Fit a link's linear layer(s) so that ``link(x) ~ target`` (ridge least squares).

    One layer: links with exactly one parametric layer (Conv2d without groups, or Linear on the
    last dim of any rank) whose output is the link's output up to a reshape, as checked on ``x``.
    Parameter-free modules before the layer (resampling, layout adapters: permute, reshape, prefix
    tokens) are fine: the fit sees the layer's own input, captured by a hook. The idea follows
    model-stitching work (SN-Net's ``ps_inv``).

    Two layers (bottleneck, reduced, ``mlp`` with ReLU or no activation): a first Conv2d / Linear,
    then only ReLU, Identity or one BatchNorm, then a second layer of the same kind (a stride-1
    'same' conv with a bias) in the same ``nn.Sequential``. The full map from the first layer's
    receptive field to the target is fitted as for one layer, reduced to the best rank r for its
    fitted values (reduced-rank regression) and factored by SVD, ``M^T = U_r S_r V_r^T``: the first
    layer gets ``sqrt(S_r) V_r^T`` (bias 0), the second ``U_r sqrt(S_r)`` in its centre tap (other
    taps 0) and the bias. r is the middle width with no activation; with a ReLU, r = width // 2
    and the first layer emits ``[A; -A]`` read by ``[B, -B]`` (``relu(z) - relu(-z) = z``), so
    the map passes the ReLU exactly. A BatchNorm gets the middle's statistics as running stats and
    ``weight = sqrt(var + eps)``, ``bias = mean``: the identity in eval mode. Middle channels left
    over keep their random first-layer rows and get zero second-layer columns. The fitted link is
    checked on ``x`` (eval mode) against the factorised prediction before anything is written.

    Returns False, leaving the link untouched, for any other structure.
    """
    layer = _single_layer(link)
    if layer is not None:
        return _fit_single(link, layer, x, target, ridge)
    two = _two_layers(link)
    if two is not None:
        return _fit_two_layers(link, two, x, target, ridge)
    return False


def init_path_links(path: ComposedPath, cache: FeatureCache, samples: int, ridge: float) -> list[bool]:
    """Least-squares-initialise each link in order on the first ``samples`` cached inputs.

    Link *i*'s target is what its destination block normally receives on the same inputs (that
    service's own prefix); earlier links are fitted first, so later ones see their real inputs.
    """
    n = min(samples, len(cache))
    first = path.spec.segments[0]
    h0 = cache.get(path.spec.local, first.end(path.local.num_blocks))[:n]
    done = []
    path.eval()
    for i, link in enumerate(path.links):
        dst = path.spec.segments[i + 1]
        with torch.no_grad():
            x = path.forward_after_prefix(h0, upto_link=i)
        done.append(least_squares_init(link, x, cache.get(dst.service, dst.start)[:n], ridge))
    return done
