"""Built-in transports, registered through the ``codenn_register_transports`` hook.

============== ======================================================================================
``in-process`` calls :class:`~codenn.remote.segment.HostSegment` objects directly, copying
               tensors as the wire would; injectable delay, bandwidth and failures for tests and
               simulation (:class:`InProcessTransport`)
``http``       an httpx client to a host server speaking OIP v2 with binary tensors
               (:class:`HttpTransport`; ``codenn serve-host`` runs such a server)
============== ======================================================================================

Both follow the contract in :mod:`codenn.remote.transport`: a down, unreachable, overloaded (5xx) or
too slow host raises :class:`~codenn.errors.HostUnavailableError`; a refused request (401, 404,
409, 413, 422) raises :class:`~codenn.errors.HostRejectedError` with the host's message; a 200
answer that cannot serve the call (unreadable, too large, no numeric ``host_compute_s``) raises
:class:`~codenn.errors.BadHostReplyError`. Whether an output fits the boundary its caller needs
is the caller's check (:func:`codenn.remote.transport.check_host_reply`): only it knows the boundary.

This module is imported with every plugin set, so httpx is imported lazily.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import torch

from codenn import hookimpl
from codenn.contracts.protocols import HostReply
from codenn.errors import (
    BadHostReplyError,
    BoundaryMismatchError,
    ConfigError,
    HostRejectedError,
    HostUnavailableError,
    TransportError,
)
from codenn.remote.served_model import Served, ServedModel
from codenn.remote.split_state import SegmentStateError


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class InProcessTransport:
    """A host in the same process: the served models (:class:`codenn.remote.served_model.ServedModel`, e.g.
    host segments) are called directly, tensors are copied.

    Simulation knobs (attributes, so a test can change them mid-run):

    - ``delay_s``: added to every call (network latency, both directions together);
    - ``bandwidth``: bytes per second; each call waits ``(bytes sent + bytes received) / bandwidth``;
    - ``fail``: True makes every call raise :class:`HostUnavailableError` (the host is down);
    - ``fail_rate``: probability in [0, 1] that a call fails that way (seeded by ``seed``).

    A call whose simulated time exceeds its ``timeout`` sleeps until the timeout and raises
    :class:`HostUnavailableError`, as a real client would.
    """

    name = "in-process"

    def __init__(
        self,
        segments: ServedModel | Sequence[ServedModel] | Mapping[str, ServedModel],
        *,
        delay_s: float = 0.0,
        bandwidth: float | None = None,
        fail: bool = False,
        fail_rate: float = 0.0,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(segments, Mapping):
            self.segments = dict(segments)
        else:
            seq = [segments] if not isinstance(segments, Sequence) else list(segments)
            self.segments = {s.name: s for s in seq}
        if delay_s < 0 or (bandwidth is not None and bandwidth <= 0) or not 0 <= fail_rate <= 1:
            raise ConfigError(f"delay_s={delay_s!r} must be >= 0, bandwidth={bandwidth!r} > 0 bytes/s or None, "
                              f"fail_rate={fail_rate!r} in [0, 1]")
        self.delay_s, self.bandwidth, self.fail, self.fail_rate = delay_s, bandwidth, fail, fail_rate
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._closed = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.calls = 0

    def _segment(self, model: str) -> ServedModel:
        if self._closed:
            raise TransportError("this in-process transport is closed")
        if self.fail or (self.fail_rate and self._rng.random() < self.fail_rate):
            raise HostUnavailableError(f"host of model {model!r} is down (simulated failure)")
        if model not in self.segments:
            raise HostRejectedError(f"model {model!r} not found; this host serves {sorted(self.segments)}", 404)
        return self.segments[model]

    def _wire(self, model: str, t0: float, sent: int, received: int, timeout: float | None) -> float:
        """Wait the simulated network time; raise at the timeout. Returns the round trip."""
        self.calls += 1
        self.bytes_sent += sent
        self.bytes_received += received
        wait = self.delay_s + ((sent + received) / self.bandwidth if self.bandwidth else 0.0)
        elapsed = time.perf_counter() - t0
        if timeout is not None and elapsed + wait > timeout:
            self._sleep(max(0.0, timeout - elapsed))
            raise HostUnavailableError(f"host of model {model!r} did not answer within {timeout} s (simulated)")
        if wait > 0:
            self._sleep(wait)
        return time.perf_counter() - t0

    def _call(self, model: str, x: torch.Tensor, run: Callable[[ServedModel, torch.Tensor], Served],
              timeout: float | None) -> HostReply:
        seg = self._segment(model)
        t0 = time.perf_counter()
        wire = x.detach().cpu().clone()  # what a receiver holds: a copy, no autograd history
        try:
            served = run(seg, wire)
        except BoundaryMismatchError as exc:
            raise HostRejectedError(str(exc), 422) from None
        except SegmentStateError as exc:
            raise HostRejectedError(str(exc), 409) from None
        out = served.output.detach().cpu().clone()
        return HostReply(out, served.seconds, self._wire(model, t0, _nbytes(wire), _nbytes(out), timeout))

    def health(self) -> bool:
        return not self._closed and not self.fail

    def metadata(self, model: str) -> dict[str, Any]:
        return self._segment(model).metadata()

    def infer(self, model: str, x: torch.Tensor, timeout: float | None = None) -> HostReply:
        return self._call(model, x, lambda seg, t: seg.serve(t), timeout)

    def train_forward(self, model: str, x: torch.Tensor, step: int, timeout: float | None = None) -> HostReply:
        return self._call(model, x, lambda seg, t: Served(*seg.train_forward(t, step)), timeout)

    def train_state(self, model: str, timeout: float | None = None) -> dict[str, Any]:
        """The split-training counters of this transport's (one) provider on ``model``."""
        return self._segment(model).train_state()

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        seg = self._segment(model)
        t0 = time.perf_counter()
        wire = grad.detach().cpu().clone()
        try:
            seconds = seg.train_backward(step, wire)
        except BoundaryMismatchError as exc:
            raise HostRejectedError(str(exc), 422) from None
        except SegmentStateError as exc:
            raise HostRejectedError(str(exc), 409) from None
        self._wire(model, t0, _nbytes(wire), 0, timeout)
        return seconds

    def close(self) -> None:
        self._closed = True


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer read in full, within the call's deadline and the size cap."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def text(self, limit: int = 2000) -> str:
        """The body as text, cut to ``limit`` characters (it goes into an error message)."""
        text = self.body.decode("utf-8", "replace")
        return text if len(text) <= limit else f"{text[:limit]}... ({len(self.body)} bytes)"


class HttpTransport:
    """An OIP v2 client (httpx) for a host server such as ``codenn serve-host``.

    ``timeout`` (seconds) is the default for every call; a call's own ``timeout`` overrides it.
    It is a deadline for the *whole* call: connecting, sending, waiting and reading the full
    answer, because httpx alone applies a timeout to each phase, and a host that drips its answer
    one byte at a time would hold a caller for ever. Each call runs in a small pool of threads
    (``max_calls`` at once; more wait, and the wait counts against their deadline) and the
    caller waits for it no longer than the deadline; the call itself stops at the first chunk
    of the answer that comes after the deadline, or when a phase runs out of the time that was
    left when it started. An answer larger than ``max_response_bytes`` is not read
    (:class:`~codenn.errors.BadHostReplyError`): a hostile host could send gigabytes.
    ``event_hooks`` and other ``client_options`` go to :class:`httpx.Client` (tests record the
    wire through them). Safe to call from many threads at once.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        binary: bool = True,
        max_response_bytes: int = 256 << 20,
        max_calls: int = 64,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
        **client_options: Any,
    ) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"host url {url!r} must start with http:// or https://")
        if timeout <= 0:
            raise ConfigError(f"timeout={timeout!r} must be > 0 seconds")
        if max_response_bytes < 1 or max_calls < 1:
            raise ConfigError(f"max_response_bytes={max_response_bytes!r} and max_calls={max_calls!r} must be >= 1")
        self.url = url.rstrip("/")
        self.binary = binary
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._httpx = httpx
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                   event_hooks=dict(event_hooks or {}), **client_options)
        self._calls = ThreadPoolExecutor(max_calls, thread_name_prefix="codenn-http")

    # -- one exchange, within a total deadline ------------------------------------------------
    def _exchange(self, method: str, path: str, *, content: bytes | None = None,
                  headers: Mapping[str, str] | None = None, timeout: float | None = None) -> _Answer:
        """Send one request and read its whole answer within ``timeout`` seconds in all."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.perf_counter() + limit
        late = f"host {self.url} did not answer {method} {path} within {limit} s (total)"
        try:
            future = self._calls.submit(self._fetch, method, path, content, headers, deadline, late)
        except RuntimeError:  # the pool is shut down
            raise TransportError(f"this http transport to {self.url} is closed") from None
        done, _ = wait([future], timeout=max(0.0, deadline - time.perf_counter()), return_when=FIRST_COMPLETED)
        if not done:
            future.cancel()  # still queued: never sent; running: it stops at its next chunk
            raise HostUnavailableError(late)
        return future.result()

    def _fetch(self, method: str, path: str, content: bytes | None, headers: Mapping[str, str] | None,
               deadline: float, late: str) -> _Answer:
        """The blocking half of :meth:`_exchange`, run in the pool: each httpx phase gets the time
        left, and the deadline is checked after every chunk of the body."""
        httpx = self._httpx
        left = deadline - time.perf_counter()
        if left <= 0:
            raise HostUnavailableError(late)
        cap = self.max_response_bytes
        try:
            with self.client.stream(method, path, content=content, headers=headers, timeout=left) as r:
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise BadHostReplyError(f"host {self.url} answered {method} {path} with {int(declared)} bytes; "
                                            f"this transport reads at most {cap} (max_response_bytes)")
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise BadHostReplyError(f"host {self.url} answered {method} {path} with more than {cap} "
                                                "bytes (max_response_bytes)")
                    chunks.append(chunk)
                    if time.perf_counter() > deadline:
                        raise HostUnavailableError(late)
                return _Answer(r.status_code, r.headers, b"".join(chunks))
        except httpx.TimeoutException:
            raise HostUnavailableError(late) from None
        except httpx.TransportError as exc:
            raise HostUnavailableError(f"host {self.url} is unreachable ({type(exc).__name__}: {exc})") from None
        except httpx.HTTPError as exc:  # e.g. a body that does not decode as its Content-Encoding says
            raise BadHostReplyError(f"host {self.url} sent an unreadable answer to {method} {path} "
                                    f"({type(exc).__name__}: {exc})") from None
        except RuntimeError:
            if self.client.is_closed:  # closed by another thread while this call was on its way
                raise TransportError(f"this http transport to {self.url} is closed") from None
            raise

    def _request(self, method: str, path: str, *, content: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None) -> _Answer:
        """:meth:`_exchange`, with an error status turned into the failure contract."""
        answer = self._exchange(method, path, content=content, headers=headers, timeout=timeout)
        if answer.status >= 400:
            message = answer.text()
            try:
                body = json.loads(answer.body)
            except (ValueError, RecursionError):
                body = None
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                message = body["error"]  # OIP errors are {"error": "..."}; anything else is shown as sent
            text = f"host {self.url} answered {answer.status} to {method} {path}: {message}"
            if answer.status >= 500:
                raise HostUnavailableError(text)
            raise HostRejectedError(text, answer.status)
        return answer

    def _object(self, answer: _Answer, what: str) -> dict[str, Any]:
        """A 200 answer's JSON object; BadHostReplyError for anything else."""
        try:
            body = json.loads(answer.body)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise BadHostReplyError(f"host {self.url} answered {what} with a body that is not a JSON object: "
                                    f"{answer.text(200)!r}")
        return body

    def _seconds(self, parameters: object, what: str) -> float:
        """The host's ``host_compute_s`` from a 200 answer's parameters: a finite number >= 0."""
        value = parameters.get("host_compute_s") if isinstance(parameters, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise BadHostReplyError(f"host {self.url} answered {what} with host_compute_s={value!r}; expected a finite "
                                    "number of seconds >= 0 in the answer's parameters")
        return float(value)

    # -- calls --------------------------------------------------------------------------------
    def _model(self, model: str) -> str:
        return f"/v2/models/{quote(model, safe='')}"

    def _post_tensor(self, model: str, endpoint: str, name: str, x: torch.Tensor, parameters: dict[str, Any],
                     timeout: float | None, want_output: bool) -> tuple[_Answer, float]:
        """POST one tensor; the answer and the time the call started."""
        from codenn_adapters import oip

        t0 = time.perf_counter()
        body, headers = oip.encode_request({name: x}, parameters=parameters, binary=self.binary,
                                           binary_output=self.binary and want_output)
        return self._request("POST", f"{self._model(model)}/{endpoint}", content=body, headers=headers,
                             timeout=timeout), t0

    def _tensor_reply(self, model: str, endpoint: str, x: torch.Tensor, parameters: dict[str, Any],
                      timeout: float | None) -> HostReply:
        """A call whose answer is the host's ``output`` tensor, with host compute and round trip."""
        from codenn_adapters import oip

        r, t0 = self._post_tensor(model, endpoint, "input", x, parameters, timeout, True)
        what = f"POST {self._model(model)}/{endpoint}"
        try:
            header, tensors = oip.decode_response(r.body, r.headers.get(oip.HEADER_LENGTH))
        except oip.ProtocolError as exc:
            raise BadHostReplyError(f"host {self.url} sent a malformed answer to {what}: {exc}") from None
        if "output" not in tensors:
            raise BadHostReplyError(f"host {self.url} answered {what} without an 'output' tensor: {sorted(tensors)}")
        seconds = self._seconds(header.parameters, what)
        return HostReply(tensors["output"], seconds, time.perf_counter() - t0)

    def health(self) -> bool:
        try:
            return self._exchange("GET", "/v2/health/ready", timeout=min(self.timeout, 2.0)).status == 200
        except TransportError:
            return False

    def metadata(self, model: str) -> dict[str, Any]:
        path = self._model(model)
        return self._object(self._request("GET", path), f"GET {path}")

    def infer(self, model: str, x: torch.Tensor, timeout: float | None = None) -> HostReply:
        return self._tensor_reply(model, "infer", x, {}, timeout)

    def train_forward(self, model: str, x: torch.Tensor, step: int, timeout: float | None = None) -> HostReply:
        return self._tensor_reply(model, "train/forward", x, {"step": step}, timeout)

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        r, _ = self._post_tensor(model, "train/backward", "grad", grad, {"step": step}, timeout, False)
        what = f"POST {self._model(model)}/train/backward"
        return self._seconds(self._object(r, what).get("parameters"), what)

    def train_state(self, model: str, timeout: float | None = None) -> dict[str, Any]:
        """This provider's own split-training counters on the host (``next_step`` to resume at)."""
        path = f"{self._model(model)}/train/state"
        params = self._object(self._request("GET", path, timeout=timeout), f"GET {path}").get("parameters")
        return _train_state(params, f"host {self.url} GET {path}")

    def close(self) -> None:
        self._calls.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _train_state(params: object, what: str) -> dict[str, Any]:
    """A train/state answer, checked: ``next_step`` and ``steps_trained`` are integers >= 0."""
    if not isinstance(params, dict) or not all(
            isinstance(params.get(k), int) and not isinstance(params.get(k), bool) and params[k] >= 0
            for k in ("next_step", "steps_trained")):
        raise BadHostReplyError(f"{what} answered {str(params)[:200]!r}; expected parameters with integer "
                                "next_step and steps_trained")
    return dict(params)


@hookimpl
def codenn_register_transports(register: Callable[..., None]) -> None:
    register("in-process", InProcessTransport,
             description="HostSegments in this process; injectable delay_s, bandwidth (bytes/s), fail, fail_rate")
    register("http", HttpTransport,
             description="OIP v2 over HTTP (httpx, binary tensors) to a `codenn serve-host` server; url, token, "
                         "timeout (total, per call), max_response_bytes")
