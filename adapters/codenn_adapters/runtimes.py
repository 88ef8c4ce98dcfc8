"""Inference runtimes for paths and their exported parts, registered as codenn plugins.

A runtime wraps one model and runs it: ``runtime.run(x) -> torch.Tensor``, with ``name`` and
``device`` attributes (:class:`Runtime`). The built-ins, registered through the
``codenn_register_runtimes`` hook (entry point ``runtimes``):

========================  ==============  ======================================================
name                      model           what runs
========================  ==============  ======================================================
``torch-eager``           ``nn.Module``   PyTorch eager on ``device`` (cpu, cuda, cuda:1, ...)
``torch-cudagraph``       ``nn.Module``   PyTorch, one CUDA graph captured per input shape
``ort-cpu``               ONNX file       ONNX Runtime, CPUExecutionProvider
``ort-cuda``              ONNX file       ONNX Runtime, CUDAExecutionProvider; IO binding on
                                          device tensors (default), optional CUDA graphs
========================  ==============  ======================================================

A runtime never moves to another device on its own: asking for CUDA where there is none (no
CUDA device, an onnxruntime without its CUDA provider, or ONNX Runtime dropping the CUDA provider
when the session is created) raises :class:`DeviceUnavailableError` naming what is missing.

This module is imported whenever codenn loads its plugins, so it imports onnxruntime lazily.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from codenn import hookimpl
from codenn.contracts.plugins import Plugins, get_plugins
from codenn.contracts.protocols import Runtime
from codenn.errors import CodennError, ConfigError
from codenn.model.timing import Samples, sample


class DeviceUnavailableError(ConfigError):
    """A runtime was asked for a device (or an execution provider) this machine cannot give."""


class RuntimeFailure(CodennError):
    """A runtime could not be created or run for a reason other than a missing device."""


# --------------------------------------------------------------------------------------------
# Device checks
# --------------------------------------------------------------------------------------------
def require_cuda(runtime: str, device: str | torch.device = "cuda") -> torch.device:
    """The CUDA device ``device`` names, or :class:`DeviceUnavailableError` saying why not."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{runtime}: device {device!r} is not a device name (expected cuda or cuda:N)") from exc
    if dev.type != "cuda":
        raise ConfigError(f"{runtime} runs on CUDA only; device {str(device)!r} is not a CUDA device (use cuda or cuda:N)")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"{runtime} needs a CUDA device, but this machine has none (torch.cuda.is_available() is "
            f"False; torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}). "
            "codenn does not fall back to CPU: use 'torch-eager' (device='cpu') or 'ort-cpu'"
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"{runtime}: device cuda:{index} does not exist; this machine has {torch.cuda.device_count()} "
            f"CUDA device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
        )
    return torch.device("cuda", index)


def _torch_device(runtime: str, device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{runtime}: device {device!r} is not a device name (cpu, cuda, cuda:N)") from exc
    return require_cuda(runtime, dev) if dev.type == "cuda" else dev


def _module(runtime: str, model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{runtime} runs a torch.nn.Module (a codenn Path or one of its parts), got "
            f"{type(model).__name__}; for an ONNX file use 'ort-cpu' or 'ort-cuda'"
        )
    return model


def _onnx_file(runtime: str, model: Any) -> str:
    if isinstance(model, nn.Module):
        raise ConfigError(
            f"{runtime} runs an ONNX file, got a {type(model).__name__}; export it first "
            "(codenn export, or codenn_adapters.onnx_export.export_path), or use 'torch-eager'"
        )
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"{runtime}: model must be the path of an ONNX file, got {type(model).__name__}")
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise ConfigError(f"{runtime}: ONNX file {path!r} does not exist")
    return path


_ORT_TORCH_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16,
                    "tensor(double)": torch.float64, "tensor(bfloat16)": torch.bfloat16}


def _io(runtime: str, session: Any) -> tuple[str, str, torch.dtype, torch.dtype, tuple[int | None, ...]]:
    """(input name, output name, input dtype, output dtype, output shape without batch)."""
    ins, outs = session.get_inputs(), session.get_outputs()
    if len(ins) != 1 or len(outs) != 1:
        raise ConfigError(f"{runtime} runs models with one input and one output; this one has "
                          f"{len(ins)} input(s) and {len(outs)} output(s)")
    in_t = _ORT_TORCH_TYPES.get(ins[0].type)
    out_t = _ORT_TORCH_TYPES.get(outs[0].type)
    if in_t is None or out_t is None:
        raise ConfigError(f"{runtime}: input type {ins[0].type} / output type {outs[0].type} not supported "
                          f"(valid: {', '.join(_ORT_TORCH_TYPES)})")
    tail = tuple(d if isinstance(d, int) else None for d in outs[0].shape[1:])
    return ins[0].name, outs[0].name, in_t, out_t, tail


# --------------------------------------------------------------------------------------------
# PyTorch runtimes
# --------------------------------------------------------------------------------------------
class TorchEager:
    """PyTorch eager mode under ``torch.inference_mode``.

    The module is moved to ``device`` (and ``dtype`` if given) in place: a path shares its
    services, so they move with it.
    """

    def __init__(self, model: nn.Module, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
        self.name = "torch-eager"
        dev = _torch_device(self.name, device)
        self.module = _module(self.name, model).to(dev).eval()
        if dtype is not None:
            self.module = self.module.to(dtype)
        self.dtype = dtype
        self.device = str(dev)
        self._dev = dev

    def run(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x.to(self._dev, self.dtype or x.dtype))


class TorchCudaGraph:
    """PyTorch with CUDA graphs: one graph captured per input shape (after ``warmup`` eager runs
    on a side stream), replayed for every later call with that shape.

    ``run`` copies ``x`` into the graph's static input and returns a copy of its static output
    (``clone=False`` returns the static output itself, overwritten by the next call).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device = "cuda",
        dtype: torch.dtype | None = None,
        warmup: int = 3,
        clone: bool = True,
    ) -> None:
        self.name = "torch-cudagraph"
        dev = require_cuda(self.name, device)
        self.module = _module(self.name, model).to(dev).eval()
        if dtype is not None:
            self.module = self.module.to(dtype)
        self.dtype, self.warmup, self.clone = dtype, warmup, clone
        self.device = str(dev)
        self._dev = dev
        self._graphs: dict[tuple[tuple[int, ...], torch.dtype], tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[Any, torch.Tensor, torch.Tensor]:
        static_in = torch.randn(shape, device=self._dev).to(dtype)
        side = torch.cuda.Stream(self._dev)
        side.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(max(1, self.warmup)):
                self.module(static_in)
        torch.cuda.current_stream(self._dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self.module(static_in)
        return graph, static_in, static_out

    def run(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype or x.dtype
        key = (tuple(x.shape), dtype)
        if key not in self._graphs:
            self._graphs[key] = self._capture(*key)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.clone() if self.clone else static_out


# --------------------------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------------------------
class OrtCpu:
    """ONNX Runtime on CPU (``CPUExecutionProvider`` only). Returns CPU tensors."""

    def __init__(self, model: str | os.PathLike[str], *, threads: int | None = None,
                 optimization: str = "all") -> None:
        self.name = "ort-cpu"
        self.device = "cpu"
        self.file = _onnx_file(self.name, model)
        import onnxruntime as ort

        levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
        if optimization not in levels:
            raise ConfigError(f"{self.name}: optimization={optimization!r} is invalid; valid: {', '.join(levels)}")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[optimization]
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(self.file, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise RuntimeFailure(f"{self.name}: onnxruntime cannot load {self.file!r}: {type(exc).__name__}: {exc}") from exc
        self.input_name, self.output_name, self.input_dtype, self.output_dtype, _ = _io(self.name, self.session)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        feed = x.detach().to("cpu", self.input_dtype).contiguous().numpy()
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: feed})[0])


class OrtCuda:
    """ONNX Runtime with the CUDA execution provider.

    - ``io_binding=True`` (default): inputs and outputs stay on the GPU as torch tensors, bound
      to the session by pointer, so ``run`` does no host copy; ``False`` feeds numpy arrays
      (host to device and back on every call, the slow path, for comparison).
    - ``cuda_graph=True``: ONNX Runtime captures a CUDA graph per batch size (``gpu_graph_id``)
      on static input/output buffers and replays it. Needs IO binding and every node on CUDA.
    - ``strict`` (default: ``cuda_graph``): fail session creation if any node would run on the
      CPU provider (``session.disable_cpu_ep_fallback``). Without it ONNX Runtime may keep small
      shape computations on CPU, which it does on purpose.

    The session must really use CUDA: if ONNX Runtime drops the CUDA provider (missing CUDA or
    cuDNN libraries), creation fails with :class:`DeviceUnavailableError`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | torch.device = "cuda",
        io_binding: bool = True,
        cuda_graph: bool = False,
        strict: bool | None = None,
        provider_options: dict[str, Any] | None = None,
    ) -> None:
        self.name = "ort-cuda"
        self.file = _onnx_file(self.name, model)
        if cuda_graph and not io_binding:
            raise ConfigError(f"{self.name}: cuda_graph=True needs io_binding=True (a CUDA graph replays fixed buffers)")
        dev = require_cuda(self.name, device)
        import onnxruntime as ort

        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise DeviceUnavailableError(
                f"{self.name}: onnxruntime {ort.__version__} has no CUDAExecutionProvider (it has "
                f"{', '.join(available)}); install onnxruntime-gpu matching CUDA {torch.version.cuda}"
            )
        strict = cuda_graph if strict is None else strict
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if strict:
            opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        cuda_opts = {"device_id": str(dev.index), "enable_cuda_graph": "1" if cuda_graph else "0",
                     **{k: str(v) for k, v in (provider_options or {}).items()}}
        try:
            self.session = ort.InferenceSession(
                self.file, opts, providers=[("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"])
        except Exception as exc:
            hint = (" (strict: some node has no CUDA kernel; pass strict=False to let ONNX Runtime run it on "
                    "CPU, without cuda_graph)") if strict else ""
            raise RuntimeFailure(
                f"{self.name}: onnxruntime cannot create a CUDA session for {self.file!r}{hint}: "
                f"{type(exc).__name__}: {exc}") from exc
        used = self.session.get_providers()
        if not used or used[0] != "CUDAExecutionProvider":
            raise DeviceUnavailableError(
                f"{self.name}: onnxruntime created the session on {used} instead of CUDA (its CUDA provider "
                "failed to load: are the CUDA and cuDNN libraries onnxruntime-gpu needs installed? Import "
                "torch first so that its CUDA libraries are loaded). codenn does not fall back to CPU"
            )
        self.device = str(dev)
        self._dev = dev
        self.io_binding, self.cuda_graph, self.strict = io_binding, cuda_graph, strict
        self.input_name, self.output_name, self.input_dtype, self.output_dtype, tail = _io(self.name, self.session)
        if io_binding and any(d is None for d in tail):
            raise ConfigError(
                f"{self.name}: the output's shape {self.session.get_outputs()[0].shape} has a dynamic "
                "dimension besides the batch; IO binding preallocates the output, so only the batch may vary")
        self._tail: tuple[int, ...] = tuple(int(d) for d in tail if d is not None)
        self._graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, torch.Tensor, Any]] = {}

    def _element_type(self, dtype: torch.dtype) -> Any:
        import numpy as np

        return {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}[dtype]

    def _bind(self, io: Any, x: torch.Tensor, out: torch.Tensor) -> None:
        index = self._dev.index or 0
        io.bind_input(self.input_name, "cuda", index, self._element_type(self.input_dtype), list(x.shape), x.data_ptr())
        io.bind_output(self.output_name, "cuda", index, self._element_type(self.output_dtype), list(out.shape),
                       out.data_ptr())

    def _run_bound(self, io: Any, run_options: Any = None) -> None:
        torch.cuda.current_stream(self._dev).synchronize()  # x was written on torch's stream
        io.synchronize_inputs()
        self.session.run_with_iobinding(io, run_options)
        io.synchronize_outputs()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        if not self.io_binding:
            feed = x.detach().to("cpu", self.input_dtype).contiguous().numpy()
            y = self.session.run([self.output_name], {self.input_name: feed})[0]
            return torch.from_numpy(y).to(self._dev)
        x = x.detach().to(self._dev, self.input_dtype).contiguous()
        out_shape = (x.shape[0], *self._tail)
        if not self.cuda_graph:
            out = torch.empty(out_shape, dtype=self.output_dtype, device=self._dev)
            io = self.session.io_binding()
            self._bind(io, x, out)
            self._run_bound(io)
            return out
        key = tuple(x.shape)
        if key not in self._graphs:
            import onnxruntime as ort

            static_in = torch.empty(key, dtype=self.input_dtype, device=self._dev)
            static_out = torch.empty(out_shape, dtype=self.output_dtype, device=self._dev)
            io = self.session.io_binding()
            self._bind(io, static_in, static_out)
            options = ort.RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(len(self._graphs)))
            self._graphs[key] = (io, static_in, static_out, options)
        io, static_in, static_out, options = self._graphs[key]
        static_in.copy_(x)
        self._run_bound(io, options)
        return static_out.clone()


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Latency of one runtime on one batch size, milliseconds per call (the runtime benchmark's
    unit; the samples behind it are seconds, :mod:`codenn.model.timing`)."""

    runtime: str
    device: str
    batch: int
    repeats: int
    p50_ms: float
    p95_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, runtime: Runtime, samples: Samples) -> Timing:
        """p50 / p95 / mean of ``samples`` (e.g. pooled over interleaved rounds), in ms."""
        return cls(runtime.name, runtime.device, samples.batch, len(samples), samples.median() * 1e3,
                   samples.percentile(95) * 1e3, samples.mean() * 1e3)


def time_runtime(runtime: Runtime, inputs: Sequence[torch.Tensor], *, warmup: int = 10, repeats: int = 200) -> Timing:
    """Time ``runtime.run`` per call: ``warmup`` untimed calls, then ``repeats`` timed calls
    rotating over ``inputs`` (several random batches, never zeros). CUDA runtimes are timed with
    CUDA events around each call (inputs already on the device), others with perf_counter."""
    return Timing.of(runtime, sample_runtime(runtime, inputs, warmup=warmup, repeats=repeats))


def sample_runtime(runtime: Runtime, inputs: Sequence[torch.Tensor], *, warmup: int = 10,
                   repeats: int = 200) -> Samples:
    """The raw per-call seconds :func:`time_runtime` summarises; a CUDA runtime's inputs are moved
    to its device first, so that the copy is not timed."""
    cuda = runtime.device.startswith("cuda")
    xs = [x.to(runtime.device) for x in inputs] if cuda else list(inputs)
    return sample(runtime.run, xs, warmup=warmup, repeats=repeats, device=runtime.device)


# --------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------
RUNTIMES: dict[str, tuple[Callable[..., Runtime], str]] = {
    "torch-eager": (TorchEager, "PyTorch eager; model: an nn.Module; options device='cpu'|'cuda[:N]', dtype"),
    "torch-cudagraph": (TorchCudaGraph, "PyTorch with one CUDA graph per input shape (CUDA only); model: an "
                                        "nn.Module; options device, dtype, warmup=3, clone=True"),
    "ort-cpu": (OrtCpu, "ONNX Runtime, CPUExecutionProvider; model: an ONNX file; options threads, "
                        "optimization='all'"),
    "ort-cuda": (OrtCuda, "ONNX Runtime, CUDAExecutionProvider (CUDA only, never falls back to CPU); model: an "
                          "ONNX file; options device, io_binding=True, cuda_graph=False, strict"),
}


@hookimpl
def codenn_register_runtimes(register: Callable[..., None]) -> None:
    for name, (factory, description) in RUNTIMES.items():
        register(name, factory, description=description)


def make_runtime(name: str, model: Any, *, plugins: Plugins | None = None, **options: Any) -> Runtime:
    """Build the registered runtime ``name`` (any plugin's) for ``model`` with ``options``."""
    return (plugins or get_plugins()).runtimes.build(name, model, **options)
