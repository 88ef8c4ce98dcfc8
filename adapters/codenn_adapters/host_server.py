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
``GET  /v2/models/{name}/train/state`` the caller's own split-training counters (to resume)
=====================================  =========================================================

Every model endpoint needs ``Authorization: Bearer TOKEN`` with a registered provider's token
(401 otherwise), and the provider's right to infer or to train that model
(:mod:`codenn_adapters.access`; 403 naming the provider and the model otherwise). A peer is not
trusted: every malformed request is a 4xx, never a 5xx. Bodies over ``max_bytes`` or answers
over ``max_response_bytes`` get 413, a body slower than ``body_timeout_s`` 408, malformed
messages 400, tensors whose shape or dtype do not fit the boundary spec or that hold NaN or inf
422 (the message names the tensor, what was expected and what was received), unknown models
404 (listing only the models the caller may use), a backward for an unknown step 409 (and both
training endpoints 409 where ``training_refused`` turned split training off). Errors are
``{"error": "..."}`` as OIP specifies. Host compute seconds travel in the response's
``parameters.host_compute_s`` so the caller can measure T_cm. Decoding, encoding and compute
run in worker threads, so a large body never stalls health checks.

With ``save_dir`` split training is durable: every ``checkpoint_every`` applied steps and at
shutdown each trained model writes ``save_dir/NAME.safetensors`` (links, every provider's
optimizer, counters; atomic and fsynced), which :func:`resume_checkpoints` loads back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path as FsPath
from typing import Any

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from codenn.errors import BoundaryMismatchError, CodennError, ConfigError
from codenn.served import Served, ServedModel
from codenn_adapters import oip
from codenn_adapters.access import AccessList, Action, Provider, access_from, load_access
from codenn_adapters.server_limits import ServerLimits, deadline_protocol
from codenn_adapters.split_state import SegmentStateError, finite_count

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Default request size cap (64 MiB): a batch of 256 AlexNet conv1 boundaries is about 48 MiB."""
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Default answer size cap: a request may not make the host send more than this."""
DEFAULT_BODY_TIMEOUT_S = 30.0
"""Seconds a client has to send a whole body (408 after): a slow-drip client cannot hold a slot."""
DEFAULT_CHECKPOINT_EVERY = 20
"""Applied split-training steps between two checkpoints when a save folder is given."""

CLOSE = {"Connection": "close"}
"""Sent with answers that leave part of a body unread: the connection cannot be reused."""

log = logging.getLogger("codenn.host")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HttpError(CodennError):
    """An answer other than 200, with its OIP error message: raised inside the server's handlers
    and turned into ``{"error": message}`` with ``status`` (the client sees HostRejectedError)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def load_tokens(file: str | FsPath) -> AccessList:
    """The providers of a JSON token file, with their rights (:mod:`codenn_adapters.access`)."""
    return load_access(file)


def check_tokens(tokens: Any, where: str = "tokens") -> AccessList:
    """A token mapping given in code, validated like a token file."""
    return access_from(tokens, where)


def checkpoint_file(save_dir: str | FsPath, model: str) -> FsPath:
    """Where a served model's split-training checkpoint lives."""
    return FsPath(save_dir) / f"{model}.safetensors"


def resume_checkpoints(models: Sequence[ServedModel], save_dir: str | FsPath,
                       log_line: Callable[[str], None] = log.info) -> dict[str, int]:
    """Load each model's checkpoint from ``save_dir`` where one exists (after its fingerprint
    check); returns the split-training steps each resumed."""
    resumed = {}
    for model in models:
        file = checkpoint_file(save_dir, model.name)
        if file.exists():
            resumed[model.name] = model.load_checkpoint(file)
            log_line(f"resumed {model.name} from {file} ({resumed[model.name]} split-training steps)")
    return resumed


class _SendDeadline:
    """ASGI middleware: an answer must be taken by the client within ``seconds`` per message, so a
    client that never reads cannot hold a worker forever."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def timed(message: Message) -> None:
            with anyio.fail_after(self.seconds):
                await send(message)

        await self.app(scope, receive, timed)


def create_app(
    segments: Sequence[ServedModel] | Mapping[str, ServedModel],
    *,
    tokens: Mapping[str, Any] | AccessList,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    save_dir: str | FsPath | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    title: str = "codenn host",
    training_refused: str | None = None,
) -> FastAPI:
    """The ASGI app serving ``segments`` (each under its ``name`` unless a mapping names them).

    ``tokens`` is a token file's content (``{"provider": "token" | {"token", "infer", "train"}}``)
    or an :class:`~codenn_adapters.access.AccessList`. With ``save_dir``, every model that split
    training changed writes its checkpoint there every ``checkpoint_every`` applied steps and at
    shutdown. With ``training_refused`` (a reason), the split-training endpoints answer 409 with
    that reason after the token check: several replicas each hold their own pending graphs and
    optimizer.
    """
    models: dict[str, ServedModel] = {}
    for key, seg in (segments.items() if isinstance(segments, Mapping) else ((s.name, s) for s in segments)):
        if key in models:
            raise ConfigError(f"two segments are both named {key!r}; serve each path once")
        models[key] = seg
    if not models:
        raise ConfigError("a host server needs at least one segment to serve")
    access = access_from(tokens)
    if max_bytes < 1024 or max_response_bytes < 1024:
        raise ConfigError(f"max_bytes={max_bytes} and max_response_bytes={max_response_bytes} are too small; "
                          "use at least 1024")
    if not body_timeout_s > 0 or checkpoint_every < 1:
        raise ConfigError(f"body_timeout_s={body_timeout_s!r} must be > 0 and checkpoint_every={checkpoint_every!r} "
                          ">= 1")
    for line in access.unmatched(models.values()):
        log.warning("token file right grants nothing served here: %s", line)

    def save(name: str, seg: ServedModel) -> None:
        if save_dir is not None and seg.steps_trained:
            seg.save_checkpoint(checkpoint_file(save_dir, name))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for name, seg in models.items():
            save(name, seg)
            if save_dir is not None and seg.steps_trained:
                log.info("saved %s after %d split-training steps", name, seg.steps_trained)

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.models = models
    app.state.access = access
    app.add_middleware(_SendDeadline, seconds=body_timeout_s)

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

    def provider_of(request: Request) -> Provider:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        provider = access.caller(given) if scheme.lower() == "bearer" and given else None
        if provider is None:
            raise HttpError(401, "missing or invalid bearer token: send 'Authorization: Bearer TOKEN' with the token "
                                 "this host registered for your provider", {"WWW-Authenticate": "Bearer"})
        return provider

    def model_for(name: str, request: Request, action: Action) -> tuple[Provider, ServedModel]:
        """The caller and the model, if the caller may ``action`` it; 404 lists only what it may use."""
        provider = provider_of(request)
        if name not in models:
            mine = sorted(n for n, m in models.items() if provider.may("infer", m) or provider.may("train", m))
            raise HttpError(404, f"model {name!r} not found; models you may use here: {mine or 'none'}")
        model = models[name]
        if not provider.may(action, model):
            raise HttpError(403, f"provider {provider.name!r} may not {action} model {name!r} on this host "
                                 "(its rights in the host's token file do not include it)")
        return provider, model

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise HttpError(413, f"request body of {declared} bytes exceeds this host's limit of {max_bytes} bytes",
                            CLOSE)
        chunks, size = [], 0
        try:
            with anyio.fail_after(body_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_bytes:
                        raise HttpError(413, f"request body exceeds this host's limit of {max_bytes} bytes", CLOSE)
                    chunks.append(chunk)
        except TimeoutError:
            raise HttpError(408, f"request body not received within {body_timeout_s} s ({size} bytes came)",
                            CLOSE) from None
        return b"".join(chunks)

    async def decode(request: Request, seg: ServedModel, tensor: str) -> tuple[oip.InferRequestHeader, torch.Tensor]:
        body = await body_of(request)
        try:
            header, tensors = await run_in_threadpool(oip.decode_request, body, request.headers.get(oip.HEADER_LENGTH))
        except oip.ProtocolError as exc:
            raise HttpError(exc.status, str(exc)) from None
        if list(tensors) != [tensor]:
            raise HttpError(422, f"model {seg.name!r} takes one input named {tensor!r}; got {list(tensors)}")
        return header, tensors[tensor]

    def check_tensor(seg: ServedModel, x: torch.Tensor, spec_shape: Sequence[int], dtype: str, what: str) -> None:
        expected = [-1, *spec_shape]
        if x.dim() != len(expected) or x.shape[0] < 1 or list(x.shape[1:]) != list(spec_shape) \
                or str(x.dtype).removeprefix("torch.") != dtype:
            raise HttpError(422, f"{what} of model {seg.name!r} must have shape {expected} and datatype "
                                 f"{oip.datatype_of(dtype)}; received shape {list(x.shape)} and datatype "
                                 f"{oip.datatype_of(x.dtype)}")
        bad = finite_count(x)
        if bad:
            raise HttpError(422, f"{what} of model {seg.name!r} has {bad} non-finite values (NaN or inf) of "
                                 f"{x.numel()}; only finite values are accepted")

    def check_answer_size(seg: ServedModel, batch: int) -> None:
        spec = seg.output_spec
        size = batch * int(torch.Size(spec.shape).numel()) * torch.empty((), dtype=getattr(torch, spec.dtype)).element_size()
        if size > max_response_bytes:
            raise HttpError(413, f"the answer to a batch of {batch} would be {size} bytes, over this host's limit of "
                                 f"{max_response_bytes} bytes; send at most "
                                 f"{max(1, batch * max_response_bytes // size)} samples per request")

    def step_of(header: oip.InferRequestHeader) -> int:
        step = (header.parameters or {}).get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**63:
            raise HttpError(422, f"split training needs an integer parameters.step >= 0; got {str(step)[:40]!r}")
        return step

    async def reply(seg: ServedModel, header: oip.InferRequestHeader, y: torch.Tensor,
                    params: dict[str, Any]) -> Response:
        bad = finite_count(y)
        if bad:
            raise HttpError(422, f"model {seg.name!r} produced {bad} non-finite values for this input; refused")
        body, headers = await run_in_threadpool(
            lambda: oip.encode_response(seg.name, {"output": y}, parameters=params,
                                        binary=oip.wants_binary_output(header), request_id=header.id))
        if len(body) > max_response_bytes:
            raise HttpError(413, f"the answer would be {len(body)} bytes, over this host's limit of "
                                 f"{max_response_bytes} bytes; send smaller batches or ask for binary output")
        return Response(body, headers=headers)

    async def compute(fn: Callable[[], Any]) -> Any:
        try:
            return await run_in_threadpool(fn)
        except BoundaryMismatchError as exc:  # NonFiniteError included
            raise HttpError(422, str(exc)) from None
        except SegmentStateError as exc:
            raise HttpError(409, str(exc)) from None

    def trainable(name: str, request: Request) -> tuple[Provider, ServedModel]:
        provider, seg = model_for(name, request, "train")
        if training_refused is not None:
            raise HttpError(409, f"split training of {seg.name!r} is off on this host: {training_refused}")
        return provider, seg

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
        _, seg = model_for(name, request, "infer")
        return await run_in_threadpool(seg.metadata)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str, request: Request) -> dict[str, Any]:
        _, seg = model_for(name, request, "infer")
        return {"name": seg.name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        _, seg = model_for(name, request, "infer")
        header, x = await decode(request, seg, "input")
        check_tensor(seg, x, seg.input_spec.shape, seg.input_spec.dtype, "input 'input'")
        check_answer_size(seg, x.shape[0])
        served: Served = await compute(lambda: seg.serve(x))
        return await reply(seg, header, served.output, {"host_compute_s": served.seconds, **served.parameters})

    @app.post("/v2/models/{name}/train/forward")
    async def train_forward(name: str, request: Request) -> Response:
        provider, seg = trainable(name, request)
        header, x = await decode(request, seg, "input")
        step = step_of(header)
        check_tensor(seg, x, seg.input_spec.shape, seg.input_spec.dtype, "input 'input'")
        check_answer_size(seg, x.shape[0])
        y, seconds = await compute(lambda: seg.train_forward(x, step, provider.name))
        return await reply(seg, header, y, {"host_compute_s": seconds, "step": step})

    @app.post("/v2/models/{name}/train/backward")
    async def train_backward(name: str, request: Request) -> dict[str, Any]:
        provider, seg = trainable(name, request)
        header, grad = await decode(request, seg, "grad")
        step = step_of(header)
        check_tensor(seg, grad, seg.output_spec.shape, seg.output_spec.dtype, "input 'grad'")
        seconds = await compute(lambda: seg.train_backward(step, grad, provider.name))
        if save_dir is not None and seg.steps_trained % checkpoint_every == 0:
            await run_in_threadpool(save, name, seg)
        state = seg.train_state(provider.name)
        return {"model_name": seg.name, "id": header.id,
                "parameters": {"host_compute_s": seconds, "step": step, "steps_trained": state["steps_trained"]}}

    @app.get("/v2/models/{name}/train/state")
    async def train_state(name: str, request: Request) -> dict[str, Any]:
        provider, seg = trainable(name, request)
        return {"model_name": seg.name, "parameters": seg.train_state(provider.name)}

    return app


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8100, log_level: str = "info",
          ssl_keyfile: str | None = None, ssl_certfile: str | None = None, limits: ServerLimits | None = None) -> None:
    """Run ``app`` with uvicorn until interrupted (one process: the segments are shared state)."""
    import uvicorn

    lim = limits or ServerLimits()
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1, ssl_keyfile=ssl_keyfile,
                ssl_certfile=ssl_certfile, limit_concurrency=lim.limit_concurrency,
                timeout_keep_alive=lim.keep_alive_s, http=deadline_protocol(lim.header_timeout_s),
                h11_max_incomplete_event_size=lim.max_header_bytes)
