"""What a codenn server listens on and what it gives each peer (``codenn serve-host`` and
``codenn serve``): address, TLS, size caps, deadlines, connection limits and, on a host, where
split training is checkpointed. One object, from the command line, Python or a test alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from codenn.errors import ConfigError

MIB = 1024 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerConfig:
    """Every server setting, with the defaults both servers document (docs/deployment.md)."""

    bind: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8100
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    max_bytes: int = 64 * MIB
    """Largest request body accepted (413 above): a batch of 256 AlexNet conv1 boundaries is about 48 MiB."""
    max_response_bytes: int = 64 * MIB
    """Largest answer a request may make the server send (413 before any compute)."""
    body_timeout_s: float = 30.0
    """Seconds a client has to send a whole body (408 after), and to take each part of an answer."""
    header_timeout_s: float = 10.0
    """Seconds a client has to send a request's headers, from connecting or from the last answer."""
    limit_concurrency: int = 64
    """Connections and requests at once; more get 503."""
    keep_alive_s: int = 5
    """Seconds an idle keep-alive connection stays open."""
    max_header_bytes: int = 16 * 1024
    """Largest request head (request line and headers) accepted."""
    save_dir: str | None = None
    """A host's split-training checkpoints (``NAME.safetensors``); None: not durable."""
    checkpoint_every: int = 20
    """Applied split-training steps between two checkpoints when ``save_dir`` is set."""

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"server port {self.port} is not in 1..65535")
        if bool(self.ssl_keyfile) != bool(self.ssl_certfile):
            raise ConfigError("--ssl-keyfile and --ssl-certfile go together: a TLS server needs both (ssl_keyfile, "
                              f"ssl_certfile); got keyfile={self.ssl_keyfile!r}, certfile={self.ssl_certfile!r}")
        if self.max_bytes < 1024 or self.max_response_bytes < 1024 or self.max_header_bytes < 1024:
            raise ConfigError(f"max_bytes={self.max_bytes}, max_response_bytes={self.max_response_bytes} and "
                              f"max_header_bytes={self.max_header_bytes} must each be at least 1024")
        if not self.body_timeout_s > 0 or not self.header_timeout_s > 0:
            raise ConfigError(f"body_timeout_s={self.body_timeout_s!r} and header_timeout_s={self.header_timeout_s!r} "
                              "must be > 0 seconds")
        if self.limit_concurrency < 1 or self.keep_alive_s < 1 or self.checkpoint_every < 1:
            raise ConfigError(f"limit_concurrency={self.limit_concurrency}, keep_alive_s={self.keep_alive_s} and "
                              f"checkpoint_every={self.checkpoint_every} must each be >= 1")

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"

    @property
    def clear_text_beyond_loopback(self) -> bool:
        """Bearer tokens and tensors would cross a network unencrypted (worth a warning)."""
        return self.bind not in LOOPBACK and not self.ssl_certfile

    def summary(self) -> str:
        return (f"body limit {self.max_bytes} bytes, answer limit {self.max_response_bytes} bytes, body timeout "
                f"{self.body_timeout_s} s, header timeout {self.header_timeout_s} s, at most "
                f"{self.limit_concurrency} connections")
