"""The header deadline a hostile peer meets (the limits themselves: :class:`codenn.config.server.ServerConfig`).

uvicorn bounds concurrent requests (``limit_concurrency``: 503 above, which a local side reads
as "host overloaded" and falls back), idle keep-alive connections and header size, but it has
no deadline for a request's *headers*: a client that drips one header byte a second holds a
connection forever. :func:`deadline_protocol` adds that deadline to uvicorn's h11 protocol.
Body and answer deadlines live in the app (:class:`codenn_adapters.host_server.HostServer`).
"""

from __future__ import annotations

import asyncio
from typing import Any


def deadline_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete within
    ``header_timeout_s`` of the connection or of the previous answer."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
