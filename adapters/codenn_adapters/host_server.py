"""A host provider's server: Open Inference Protocol v2 over FastAPI (run with uvicorn).

Endpoints (``{name}`` is a served model's name: a :class:`codenn.served.ServedModel` such as a
:class:`~codenn_adapters.host_segment.HostSegment`):

=====================================  =========================================================
``GET  /v2/health/live``, ``/ready``   liveness / readiness (no token needed)
``GET  /v2``                           server metadata (extensions)
``GET  /v2/models/{name}``             model metadata: input/output tensors, the service card
``GET  /v2/models/{name}/ready``       model readiness
``POST /v2/models/{name}/infer``       inference (binary tensor data extension or JSON data)
``POST /v2/models/{name}/train/forward``   split training, forward half (``parameters.step``)
``POST /v2/models/{name}/train/backward``  split training, backward half (input ``grad``)
=====================================  =========================================================

Every model endpoint needs ``Authorization: Bearer TOKEN`` with one of the registered local
providers' tokens (401 otherwise). Bodies over ``max_bytes`` get 413; malformed messages 400;
tensors whose shape or dtype do not fit the boundary spec 422 (the message names the expected
and the received shape); unknown models 404; a backward for an unknown step 409 (and both
training endpoints 409 where ``training_refused`` turned split training off). Errors are
``{"error": "..."}`` as OIP specifies. Host compute seconds travel in the response's
``parameters.host_compute_s`` so the caller can measure T_cm.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from codenn.errors import BoundaryMismatchError, CodennError, ConfigError
from codenn.served import Served, ServedModel
from codenn_adapters import oip
from codenn_adapters.host_segment import SegmentStateError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Default request size cap (64 MiB): a batch of 256 AlexNet conv1 boundaries is about 48 MiB."""

log = logging.getLogger("codenn.host")


class HttpError(CodennError):
    """An answer other than 200, with its OIP error message: raised inside the server's handlers
    and turned into ``{"error": message}`` with ``status`` (the client sees HostRejectedError)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def load_tokens(file: str | FsPath) -> dict[str, str]:
    """``{"provider": "token", ...}`` from a JSON file; at least one, every token non-empty."""
    try:
        data = json.loads(FsPath(file).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"token file {str(file)!r} cannot be read as JSON: {exc}") from exc
    return check_tokens(data, str(file))


def check_tokens(tokens: Any, where: str = "tokens") -> dict[str, str]:
    if not isinstance(tokens, Mapping) or not tokens:
        raise ConfigError(f"{where} must map each local provider's name to its token, e.g. "
                          '{"alexnet": "s3cret"}; got ' + repr(type(tokens).__name__ if tokens else tokens))
    bad = [k for k, v in tokens.items() if not isinstance(k, str) or not isinstance(v, str) or len(v) < 8]
    if bad:
        raise ConfigError(f"{where}: tokens of {bad} are not strings of at least 8 characters")
    return dict(tokens)


def create_app(
    segments: Sequence[ServedModel] | Mapping[str, ServedModel],
    *,
    tokens: Mapping[str, str],
    max_bytes: int = DEFAULT_MAX_BYTES,
    save_dir: str | FsPath | None = None,
    title: str = "codenn host",
    training_refused: str | None = None,
) -> FastAPI:
    """The ASGI app serving ``segments`` (each under its ``name`` unless a mapping names them).

    With ``save_dir``, every segment that split training changed writes its host-side links to
    ``save_dir/NAME.safetensors`` when the server shuts down (atomically). With
    ``training_refused`` (a reason), the split-training endpoints answer 409 with that reason
    after the token check: several replicas each hold their own pending graphs and optimizer.
    """
    models: dict[str, ServedModel] = {}
    for key, seg in (segments.items() if isinstance(segments, Mapping) else ((s.name, s) for s in segments)):
        if key in models:
            raise ConfigError(f"two segments are both named {key!r}; serve each path once")
        models[key] = seg
    if not models:
        raise ConfigError("a host server needs at least one segment to serve")
    known = check_tokens(tokens)
    if max_bytes < 1024:
        raise ConfigError(f"max_bytes={max_bytes} is too small; use at least 1024")
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if save_dir is not None:
            for name, seg in models.items():
                if seg.steps_trained:
                    seg.save_links(FsPath(save_dir) / f"{name}.safetensors")
                    log.info("saved the links of %s after %d split-training steps", name, seg.steps_trained)

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.models = models

    @app.exception_handler(HttpError)
    async def _http_error(_: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def provider_of(request: Request) -> str:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given:
            for provider, token in known.items():
                if hmac.compare_digest(given.encode(), token.encode()):
                    return provider
        raise HttpError(401, "missing or invalid bearer token: send 'Authorization: Bearer TOKEN' with the token "
                             "this host registered for your provider", {"WWW-Authenticate": "Bearer"})

    def model_of(name: str) -> ServedModel:
        if name not in models:
            raise HttpError(404, f"model {name!r} not found; this host serves {sorted(models)}")
        return models[name]

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise HttpError(413, f"request body of {declared} bytes exceeds this host's limit of {max_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HttpError(413, f"request body exceeds this host's limit of {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def decode(request: Request, seg: ServedModel, tensor: str) -> tuple[oip.InferRequestHeader, torch.Tensor]:
        body = await body_of(request)
        try:
            header, tensors = oip.decode_request(body, request.headers.get(oip.HEADER_LENGTH))
        except oip.ProtocolError as exc:
            raise HttpError(exc.status, str(exc)) from None
        if list(tensors) != [tensor]:
            raise HttpError(422, f"model {seg.name!r} takes one input named {tensor!r}; got {list(tensors)}")
        return header, tensors[tensor]

    def check_shape(seg: ServedModel, x: torch.Tensor, spec_shape: Sequence[int], dtype: str, what: str) -> None:
        expected = [-1, *spec_shape]
        if x.dim() != len(expected) or x.shape[0] < 1 or list(x.shape[1:]) != list(spec_shape) \
                or str(x.dtype).removeprefix("torch.") != dtype:
            raise HttpError(422, f"{what} of model {seg.name!r} must have shape {expected} and datatype "
                                 f"{oip.datatype_of(dtype)}; received shape {list(x.shape)} and datatype "
                                 f"{oip.datatype_of(x.dtype)}")

    def trainable(name: str, request: Request) -> tuple[str, ServedModel]:
        provider = provider_of(request)
        seg = model_of(name)
        if training_refused is not None:
            raise HttpError(409, f"split training of {seg.name!r} is off on this host: {training_refused}")
        return provider, seg

    def step_of(header: oip.InferRequestHeader) -> int:
        step = (header.parameters or {}).get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**63:
            raise HttpError(422, f"split training needs an integer parameters.step >= 0; got {step!r}")
        return step

    def reply(seg: ServedModel, header: oip.InferRequestHeader, y: torch.Tensor, params: dict[str, Any]) -> Response:
        body, headers = oip.encode_response(seg.name, {"output": y}, parameters=params,
                                            binary=oip.wants_binary_output(header), request_id=header.id)
        return Response(body, headers=headers)

    async def compute(fn: Callable[[], Any]) -> Any:
        try:
            return await run_in_threadpool(fn)
        except BoundaryMismatchError as exc:
            raise HttpError(422, str(exc)) from None
        except SegmentStateError as exc:
            raise HttpError(409, str(exc)) from None

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        from codenn import __version__

        return {"name": "codenn-host", "version": __version__,
                "extensions": ["binary_tensor_data", "codenn_split_training"]}

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str, request: Request) -> dict[str, Any]:
        provider_of(request)
        seg = model_of(name)
        return await run_in_threadpool(seg.metadata)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str, request: Request) -> dict[str, Any]:
        provider_of(request)
        return {"name": model_of(name).name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        provider_of(request)
        seg = model_of(name)
        header, x = await decode(request, seg, "input")
        check_shape(seg, x, seg.input_spec.shape, seg.input_spec.dtype, "input 'input'")
        served: Served = await compute(lambda: seg.serve(x))
        return reply(seg, header, served.output, {"host_compute_s": served.seconds, **served.parameters})

    @app.post("/v2/models/{name}/train/forward")
    async def train_forward(name: str, request: Request) -> Response:
        provider, seg = trainable(name, request)
        header, x = await decode(request, seg, "input")
        step = step_of(header)
        check_shape(seg, x, seg.input_spec.shape, seg.input_spec.dtype, "input 'input'")
        y, seconds = await compute(lambda: seg.train_forward(x, step))
        log.debug("train/forward %s step %d from %s", seg.name, step, provider)
        return reply(seg, header, y, {"host_compute_s": seconds, "step": step})

    @app.post("/v2/models/{name}/train/backward")
    async def train_backward(name: str, request: Request) -> dict[str, Any]:
        _, seg = trainable(name, request)
        header, grad = await decode(request, seg, "grad")
        step = step_of(header)
        check_shape(seg, grad, seg.output_spec.shape, seg.output_spec.dtype, "input 'grad'")
        seconds = await compute(lambda: seg.train_backward(step, grad))
        return {"model_name": seg.name, "id": header.id, "parameters": {"host_compute_s": seconds, "step": step,
                                                                          "steps_trained": seg.steps_trained}}

    return app


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8100, log_level: str = "info",
          ssl_keyfile: str | None = None, ssl_certfile: str | None = None) -> None:
    """Run ``app`` with uvicorn until interrupted (one process: the segments are shared state)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, ssl_keyfile=ssl_keyfile,
                ssl_certfile=ssl_certfile)
