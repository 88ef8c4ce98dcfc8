"""codenn.model.timing: one sampler, raw seconds, and the summaries every timer derives from it."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from codenn.errors import ConfigError
from codenn.model.timing import Samples, sample
from codenn.remote.coordinator import nominal_latency_us


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()


def test_sample_times_a_real_module_in_seconds_rotating_its_inputs() -> None:
    net = small_net()
    xs = [torch.randn(5, 3, 16, 16) for _ in range(3)]
    seen: list[torch.Tensor] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        with torch.inference_mode():
            return net(x)

    s = sample(fn, xs, warmup=2, repeats=7)
    assert len(s) == 7 and s.batch == 5
    assert all(0 < t < 1.0 for t in s.seconds)  # seconds: a tiny conv on 16x16 is far below a second
    # 2 warm-up calls, then 7 timed calls, each rotating over the inputs from the first
    assert [id(x) for x in seen] == [id(xs[i % 3]) for i in [*range(2), *range(7)]]
    assert s.throughput() == pytest.approx(5 / s.mean())


def test_the_unit_is_seconds() -> None:
    s = sample(lambda x: time.sleep(0.02), [torch.ones(1)], warmup=0, repeats=3)
    assert all(0.015 < t < 0.5 for t in s.seconds)
    # the µs edge: per sample, as RouteInfo wants it
    us = nominal_latency_us(lambda x: time.sleep(0.01), torch.ones(4, 2), repeats=3)
    assert 0.01e6 / 4 * 0.8 < us < 0.5e6 / 4


def test_summaries_on_known_samples() -> None:
    s = Samples((0.004, 0.001, 0.003, 0.002), batch=2)
    assert s.median() == pytest.approx(0.0025)
    assert s.percentile(50) == pytest.approx(s.median())
    assert s.percentile(0) == 0.001 and s.percentile(100) == 0.004
    assert s.percentile(95) == pytest.approx(0.003 + 0.85 * 0.001)  # linear between the two nearest
    assert s.mean() == pytest.approx(0.0025)
    assert s.throughput() == pytest.approx(2 / 0.0025)
    odd = Samples(tuple(float(i) for i in range(1, 102)))
    assert odd.median() == 51.0 and odd.percentile(95) == pytest.approx(96.0)
    pooled = Samples.pool([s, Samples((0.010,), batch=2)])
    assert len(pooled) == 5 and pooled.batch == 2 and pooled.median() == 0.003


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Samples(()), "at least one time"),
    (lambda: Samples((0.1, -1.0)), "finite seconds >= 0"),
    (lambda: Samples((0.1,), batch=0), "batch >= 1"),
    (lambda: Samples((0.1,)).percentile(101), "must be in"),
    (lambda: Samples.pool([Samples((0.1,), 1), Samples((0.1,), 2)]), "one batch size"),
    (lambda: sample(lambda x: x, [], warmup=0, repeats=1), "at least one input"),
    (lambda: sample(lambda x: x, [torch.ones(1)], warmup=0, repeats=0), "repeats >= 1"),
])
def test_bad_input_is_a_clear_error(make, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_profile_keeps_microseconds() -> None:
    from codenn.model.blocks import BoundarySpec
    from codenn.model.profile import time_module

    us = time_module(small_net(), BoundarySpec.for_input((3, 16, 16)), batch_size=2, repeats=5)
    assert 0 < us < 1e6  # µs per call: well under a second, well over a nanosecond


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_events_time_a_module_on_the_gpu() -> None:
    net = small_net().cuda()
    xs = [torch.randn(8, 3, 64, 64, device="cuda") for _ in range(3)]
    with torch.inference_mode():
        s = sample(net, xs, warmup=3, repeats=20)
        wall = time.perf_counter()
        sample(net, xs, warmup=0, repeats=20)
        wall = time.perf_counter() - wall
    assert len(s) == 20 and s.batch == 8
    assert all(0 < t < 1.0 for t in s.seconds)
    assert s.median() * 20 < wall * 5  # events in seconds, on the scale of the wall clock (not ms)
