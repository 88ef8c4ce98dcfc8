"""Built-in transports, registered through the ``codenn_register_transports`` hook.

============== ======================================================================================
``in-process`` calls :class:`~codenn_adapters.host_segment.HostSegment` objects directly, copying
               tensors as the wire would; injectable delay, bandwidth and failures for tests and
               simulation (:class:`InProcessTransport`)
``http``       an httpx client to a host server speaking OIP v2 with binary tensors
               (:class:`HttpTransport`; ``codenn serve-host`` runs such a server)
============== ======================================================================================

Both follow the contract in :mod:`codenn.transport`: a down, unreachable, overloaded (5xx) or
too slow host raises :class:`~codenn.errors.HostUnavailableError`; a refused request (401, 404,
409, 413, 422) raises :class:`~codenn.errors.HostRejectedError` with the host's message.

This module is imported with every plugin set, so httpx is imported lazily.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import torch

from codenn import hookimpl
from codenn.errors import BoundaryMismatchError, ConfigError, HostRejectedError, HostUnavailableError, TransportError
from codenn.served import Served, ServedModel
from codenn.transport import HostReply

if TYPE_CHECKING:
    import httpx


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class InProcessTransport:
    """A host in the same process: the served models (:class:`codenn.served.ServedModel`, e.g.
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

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        from codenn_adapters.host_segment import SegmentStateError

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


class HttpTransport:
    """An OIP v2 client (httpx) for a host server such as ``codenn serve-host``.

    ``timeout`` (seconds) is the default for every call; a call's own ``timeout`` overrides it.
    httpx applies it to each phase (connect, send, wait for the answer). ``event_hooks`` and
    other ``client_options`` go to :class:`httpx.Client` (tests record the wire through them).
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        binary: bool = True,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
        **client_options: Any,
    ) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"host url {url!r} must start with http:// or https://")
        if timeout <= 0:
            raise ConfigError(f"timeout={timeout!r} must be > 0 seconds")
        self.url = url.rstrip("/")
        self.binary = binary
        self.timeout = timeout
        self._httpx = httpx
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                   event_hooks=dict(event_hooks or {}), **client_options)

    def _request(self, method: str, path: str, *, content: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None) -> httpx.Response:
        httpx = self._httpx
        limit = self.timeout if timeout is None else timeout
        try:
            r = self.client.request(method, path, content=content, headers=headers, timeout=limit)
        except httpx.TimeoutException:
            raise HostUnavailableError(f"host {self.url} did not answer {method} {path} within {limit} s") from None
        except httpx.TransportError as exc:
            raise HostUnavailableError(f"host {self.url} is unreachable ({type(exc).__name__}: {exc})") from None
        if r.status_code >= 400:
            try:
                message = r.json().get("error", r.text)
            except ValueError:
                message = r.text
            text = f"host {self.url} answered {r.status_code} to {method} {path}: {message}"
            if r.status_code >= 500:
                raise HostUnavailableError(text)
            raise HostRejectedError(text, r.status_code)
        return r

    def _model(self, model: str) -> str:
        return f"/v2/models/{quote(model, safe='')}"

    def _post_tensor(self, model: str, endpoint: str, name: str, x: torch.Tensor, parameters: dict[str, Any],
                     timeout: float | None, want_output: bool) -> tuple[Any, float]:
        """POST one tensor; the response and the time the call started."""
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
        try:
            header, tensors = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))
        except oip.ProtocolError as exc:
            raise HostUnavailableError(f"host {self.url} sent a malformed answer: {exc}") from None
        if "output" not in tensors:
            raise HostUnavailableError(f"host {self.url} answered without an 'output' tensor: {sorted(tensors)}")
        seconds = float((header.parameters or {}).get("host_compute_s", 0.0))
        return HostReply(tensors["output"], seconds, time.perf_counter() - t0)

    def health(self) -> bool:
        try:
            r = self.client.get("/v2/health/ready", timeout=min(self.timeout, 2.0))
        except self._httpx.HTTPError:
            return False
        return r.status_code == 200

    def metadata(self, model: str) -> dict[str, Any]:
        return self._request("GET", self._model(model)).json()

    def infer(self, model: str, x: torch.Tensor, timeout: float | None = None) -> HostReply:
        return self._tensor_reply(model, "infer", x, {}, timeout)

    def train_forward(self, model: str, x: torch.Tensor, step: int, timeout: float | None = None) -> HostReply:
        return self._tensor_reply(model, "train/forward", x, {"step": step}, timeout)

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        r, _ = self._post_tensor(model, "train/backward", "grad", grad, {"step": step}, timeout, False)
        return float(r.json().get("parameters", {}).get("host_compute_s", 0.0))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@hookimpl
def codenn_register_transports(register: Callable[..., None]) -> None:
    register("in-process", InProcessTransport,
             description="HostSegments in this process; injectable delay_s, bandwidth (bytes/s), fail, fail_rate")
    register("http", HttpTransport,
             description="OIP v2 over HTTP (httpx, binary tensors) to a `codenn serve-host` server; url, token, timeout")
