"""A codenn server's HTTP shell: Open Inference Protocol v2 over FastAPI (run with uvicorn).

Endpoints (``{name}`` is a served model's name: a :class:`codenn.remote.served_model.ServedModel` such
as a :class:`~codenn.remote.segment.HostSegment`):

=====================================  =========================================================
``GET  /v2/health/live``, ``/ready``   liveness / readiness (no token needed)
``GET  /v2``                           server metadata (the extensions it offers)
``GET  /v2/models/{name}``             model metadata: input/output tensors, the service card
``GET  /v2/models/{name}/ready``       model readiness
``POST /v2/models/{name}/infer``       inference (binary tensor data extension or JSON data)
``POST /v2/models/{name}/train/forward``   split training, forward half (``parameters.step``)
``POST /v2/models/{name}/train/backward``  split training, backward half (input ``grad``)
``GET  /v2/models/{name}/train/state`` the caller's own split-training counters (to resume)
=====================================  =========================================================

:class:`HostServer` reads a request (size cap, body deadline), decodes it, hands it to the
:class:`~codenn.remote.dataplane.DataPlane` (who is calling, may they, does the tensor fit) and
encodes the answer; decoding, encoding and compute run in worker threads, so a large body never
stalls health checks. Every refusal is one error class, and :data:`STATUS` is the one table from
error class to HTTP status; errors are ``{"error": "..."}`` as OIP specifies. Host compute
seconds travel in the response's ``parameters.host_compute_s`` so the caller can measure T_cm.
With ``ServerConfig.save_dir`` split training is durable (:mod:`codenn.remote.host`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from codenn.config.server import ServerConfig
from codenn.errors import (
    BoundaryMismatchError,
    CodennError,
    ConflictError,
    ForbiddenError,
    MalformedRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnauthenticatedError,
)
from codenn.remote.access import AccessList, Provider
from codenn.remote.dataplane import DataPlane, ServerRole
from codenn.remote.served_model import ServedModel
from codenn_adapters import oip
from codenn_adapters.server_limits import deadline_protocol

STATUS: dict[type[CodennError], int] = {
    MalformedRequestError: 400,
    UnauthenticatedError: 401,
    ForbiddenError: 403,
    ModelNotFoundError: 404,
    RequestTimeoutError: 408,
    ConflictError: 409,  # SegmentStateError included
    PayloadTooLargeError: 413,
    BoundaryMismatchError: 422,  # NonFiniteError included
}
"""Error class -> HTTP status; a subclass takes its nearest listed base's status."""

CLOSE = {"Connection": "close"}
"""Sent with answers that leave part of a body unread: the connection cannot be reused."""

log = logging.getLogger("codenn.host")
T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def status_of(exc: CodennError) -> int | None:
    """The HTTP status of a refusal (a ProtocolError carries its own), None for any other error."""
    if isinstance(exc, oip.ProtocolError):
        return exc.status
    mro = type(exc).__mro__
    found = [(mro.index(cls), code) for cls, code in STATUS.items() if isinstance(exc, cls)]
    return min(found)[1] if found else None


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


class HostServer:
    """One server: its :class:`DataPlane` and the FastAPI app whose handlers are a few lines each."""

    def __init__(self, served: Sequence[ServedModel] | Mapping[str, ServedModel], *,
                 tokens: Mapping[str, Any] | AccessList, config: ServerConfig | None = None,
                 title: str = "codenn host", training_refused: str | None = None, role: ServerRole = "host") -> None:
        self.plane = DataPlane(served, tokens=tokens, config=config, training_refused=training_refused, role=role)
        self.config = self.plane.config
        self.title = title

    # -- reading a request ----------------------------------------------------------------------
    def caller(self, request: Request) -> Provider:
        return self.plane.authenticate(request.headers.get("authorization", ""))

    async def body(self, request: Request) -> bytes:
        """The whole body, within the size cap and the body deadline."""
        cap, deadline = self.config.max_bytes, self.config.body_timeout_s
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise PayloadTooLargeError(f"request body of {declared} bytes exceeds this server's limit of {cap} bytes",
                                       CLOSE)
        chunks, size = [], 0
        try:
            with anyio.fail_after(deadline):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cap:
                        raise PayloadTooLargeError(f"request body exceeds this server's limit of {cap} bytes", CLOSE)
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestTimeoutError(f"request body not received within {deadline} s ({size} bytes came)",
                                      CLOSE) from None
        return b"".join(chunks)

    async def decode(self, request: Request, model: ServedModel, tensor: str
                     ) -> tuple[oip.InferRequestHeader, torch.Tensor]:
        """The request's header and its one input, named ``tensor``."""
        body = await self.body(request)
        header, tensors = await run_in_threadpool(oip.decode_request, body, request.headers.get(oip.HEADER_LENGTH))
        if list(tensors) != [tensor]:
            raise BoundaryMismatchError(f"model {model.name!r} takes one input named {tensor!r}; got {list(tensors)}")
        return header, tensors[tensor]

    # -- answering ------------------------------------------------------------------------------
    @staticmethod
    async def compute(fn: Callable[[], T]) -> T:
        return await run_in_threadpool(fn)

    async def reply(self, model: ServedModel, header: oip.InferRequestHeader, y: torch.Tensor,
                    params: dict[str, Any]) -> Response:
        self.plane.check_output(model, y)
        body, headers = await run_in_threadpool(
            lambda: oip.encode_response(model.name, {"output": y}, parameters=params,
                                        binary=oip.wants_binary_output(header), request_id=header.id))
        cap = self.config.max_response_bytes
        if len(body) > cap:
            raise PayloadTooLargeError(f"the answer would be {len(body)} bytes, over this server's limit of {cap} "
                                       "bytes; send smaller batches or ask for binary output")
        return Response(body, headers=headers)

    # -- endpoints ------------------------------------------------------------------------------
    async def server_metadata(self) -> dict[str, Any]:
        from codenn import __version__

        return self.plane.server_metadata(__version__)

    async def model_metadata(self, name: str, request: Request) -> dict[str, Any]:
        model = self.plane.model(name, self.caller(request), "infer")
        return await run_in_threadpool(model.metadata)

    async def model_ready(self, name: str, request: Request) -> dict[str, Any]:
        model = self.plane.model(name, self.caller(request), "infer")
        return {"name": model.name, "ready": True}

    async def infer(self, name: str, request: Request) -> Response:
        model = self.plane.model(name, self.caller(request), "infer")
        header, x = await self.decode(request, model, "input")
        served = await self.compute(lambda: self.plane.infer(model, x))
        return await self.reply(model, header, served.output, {"host_compute_s": served.seconds, **served.parameters})

    async def train_forward(self, name: str, request: Request) -> Response:
        provider = self.caller(request)
        model = self.plane.trainable(name, provider)
        header, x = await self.decode(request, model, "input")
        step = self.plane.step_of(header.parameters)
        y, seconds = await self.compute(lambda: self.plane.train_forward(model, provider, x, step))
        return await self.reply(model, header, y, {"host_compute_s": seconds, "step": step})

    async def train_backward(self, name: str, request: Request) -> dict[str, Any]:
        provider = self.caller(request)
        model = self.plane.trainable(name, provider)
        header, grad = await self.decode(request, model, "grad")
        step = self.plane.step_of(header.parameters)
        seconds = await self.compute(lambda: self.plane.train_backward(model, provider, grad, step))
        trained = model.train_state(provider.name)["steps_trained"]
        return {"model_name": model.name, "id": header.id,
                "parameters": {"host_compute_s": seconds, "step": step, "steps_trained": trained}}

    async def train_state(self, name: str, request: Request) -> dict[str, Any]:
        provider = self.caller(request)
        model = self.plane.trainable(name, provider)
        return {"model_name": model.name, "parameters": model.train_state(provider.name)}

    # -- the app --------------------------------------------------------------------------------
    def app(self) -> FastAPI:
        plane = self.plane

        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            yield
            plane.save_all()

        app = FastAPI(title=self.title, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
        app.state.models, app.state.access, app.state.server = plane.models, plane.access, self
        app.add_middleware(_SendDeadline, seconds=self.config.body_timeout_s)
        app.add_exception_handler(CodennError, _refused)
        app.add_exception_handler(StarletteHTTPException, _starlette_error)
        app.add_exception_handler(Exception, _unexpected)
        app.add_api_route("/v2/health/live", _live, methods=["GET"])
        app.add_api_route("/v2/health/ready", _ready, methods=["GET"])
        app.add_api_route("/v2", self.server_metadata, methods=["GET"])
        app.add_api_route("/v2/models/{name}", self.model_metadata, methods=["GET"])
        app.add_api_route("/v2/models/{name}/ready", self.model_ready, methods=["GET"])
        app.add_api_route("/v2/models/{name}/infer", self.infer, methods=["POST"])
        app.add_api_route("/v2/models/{name}/train/forward", self.train_forward, methods=["POST"])
        app.add_api_route("/v2/models/{name}/train/backward", self.train_backward, methods=["POST"])
        app.add_api_route("/v2/models/{name}/train/state", self.train_state, methods=["GET"])
        return app


async def _live() -> dict[str, bool]:
    return {"live": True}


async def _ready() -> dict[str, bool]:
    return {"ready": True}


async def _refused(_: Request, exc: CodennError) -> JSONResponse:
    status = status_of(exc)
    if status is None:
        return await _unexpected(_, exc)
    return JSONResponse({"error": str(exc)}, status_code=status, headers=getattr(exc, "headers", None))


async def _starlette_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def create_app(served: Sequence[ServedModel] | Mapping[str, ServedModel], *, tokens: Mapping[str, Any] | AccessList,
               config: ServerConfig | None = None, title: str = "codenn host", training_refused: str | None = None,
               role: ServerRole = "host") -> FastAPI:
    """The ASGI app serving ``served`` (each under its ``name`` unless a mapping names them).

    ``tokens`` is a token file's content (``{"provider": "token" | {"token", "infer", "train"}}``)
    or an :class:`~codenn.remote.access.AccessList`. ``config`` holds every limit and, with
    ``save_dir``, where split training is checkpointed. With ``training_refused`` (a reason), the
    split-training endpoints answer 409 with it after the token check (several replicas each hold
    their own pending graphs and optimizer)."""
    return HostServer(served, tokens=tokens, config=config, title=title, training_refused=training_refused,
                      role=role).app()


def serve(app: Any, config: ServerConfig | None = None, *, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted (one process: the served models are shared state)."""
    import uvicorn

    cfg = config or ServerConfig()
    uvicorn.run(app, host=cfg.bind, port=cfg.port, log_level=log_level, workers=1, ssl_keyfile=cfg.ssl_keyfile,
                ssl_certfile=cfg.ssl_certfile, limit_concurrency=cfg.limit_concurrency,
                timeout_keep_alive=cfg.keep_alive_s, http=deadline_protocol(cfg.header_timeout_s),
                h11_max_incomplete_event_size=cfg.max_header_bytes)


__all__ = ["STATUS", "HostServer", "create_app", "serve", "status_of"]
