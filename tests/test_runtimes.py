"""Runtimes (codenn_adapters.runtimes) on a tiny exported cross path.

The CPU tests run everywhere; the ``gpu`` tests (excluded by default, run with ``-m gpu`` on a
machine with CUDA) check the CUDA runtimes against PyTorch: IO binding, CUDA graphs (ONNX Runtime
and PyTorch), batch changes, fp16.
"""

from __future__ import annotations

import pytest
import torch

from codenn.paths.composed import ComposedPath
from codenn_adapters.onnx_export import FP32_TOLERANCE, export_path
from codenn_adapters.runtimes import (
    OrtCpu,
    OrtCuda,
    Runtime,
    TorchCudaGraph,
    TorchEager,
    make_runtime,
    time_runtime,
)
from tiny import tiny_scenario

pytestmark = pytest.mark.onnx
SPEC = "local[:2] > host[2:4] > local[3:]"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    local, host, splits, plugins = tiny_scenario(size=16)
    torch.manual_seed(0)
    path = ComposedPath(SPEC, [local, host], link="conv1x1").eval()
    result = export_path(path, tmp_path_factory.mktemp("tiny"), threads=1)
    return path, result


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = FP32_TOLERANCE) -> bool:
    a, b = a.float().cpu(), b.float().cpu()
    return bool((a - b).abs().max() <= tol * b.abs().max())


def test_ort_cpu_runs_every_file_and_times_it(exported) -> None:
    path, result = exported
    rt = OrtCpu(result.path_of("merged"), threads=1)
    assert isinstance(rt, Runtime)
    xs = [torch.randn(4, 3, 16, 16) for _ in range(3)]
    with torch.no_grad():
        assert _close(rt.run(xs[0]), path(xs[0]))
    timing = time_runtime(rt, xs, warmup=2, repeats=10)
    assert timing.runtime == "ort-cpu" and timing.batch == 4 and 0 < timing.p50_ms <= timing.p95_ms


def test_torch_eager_matches_path(exported) -> None:
    path, _ = exported
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(TorchEager(path).run(x), path(x))


# ----------------------------------------------------------------------------------------------
# GPU (run with -m gpu)
# ----------------------------------------------------------------------------------------------
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
def test_ort_cuda_io_binding_matches_torch(exported) -> None:
    path, result = exported
    rt = make_runtime("ort-cuda", result.path_of("merged"))
    assert rt.device.startswith("cuda")
    for batch in (1, 5):
        x = torch.randn(batch, 3, 16, 16, device="cuda")
        y = rt.run(x)
        assert y.is_cuda
        with torch.no_grad():
            assert _close(y, path.cpu()(x.cpu()), 1e-3)  # TF32 / cuDNN algorithms differ from CPU


@pytest.mark.gpu
@gpu
def test_ort_cuda_graph_replays_new_inputs(exported) -> None:
    path, result = exported
    rt = OrtCuda(result.path_of("merged"), cuda_graph=True)
    for batch in (2, 2, 3, 2):  # capture per batch size, replay with fresh data
        x = torch.randn(batch, 3, 16, 16, device="cuda")
        with torch.no_grad():
            assert _close(rt.run(x), path.cpu()(x.cpu()), 1e-3)


@pytest.mark.gpu
@gpu
def test_ort_cuda_without_io_binding(exported) -> None:
    path, result = exported
    rt = OrtCuda(result.path_of("merged"), io_binding=False)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert _close(rt.run(x), path.cpu()(x), 1e-3)


@pytest.mark.gpu
@gpu
def test_torch_cuda_graph_matches_eager(exported) -> None:
    path, _ = exported
    eager = TorchEager(path, device="cuda")
    graphed = TorchCudaGraph(path)
    for batch in (1, 4, 1):
        x = torch.randn(batch, 3, 16, 16, device="cuda")
        assert _close(graphed.run(x), eager.run(x), 1e-5)
    timing = time_runtime(graphed, [torch.randn(1, 3, 16, 16) for _ in range(3)], warmup=3, repeats=20)
    assert timing.device.startswith("cuda") and timing.p50_ms > 0
    path.cpu()
