"""The network between two providers, as the search models it before any connection exists
(``[network]``): bandwidth and round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from codenn.errors import ConfigError


@dataclass(frozen=True)
class Network:
    """A link between providers: bandwidth in megabits per second and round-trip time in ms."""

    bandwidth_mbps: float = 1000.0
    rtt_ms: float = 0.5

    def __post_init__(self) -> None:
        if not self.bandwidth_mbps > 0 or self.rtt_ms < 0:
            raise ConfigError(
                f"network needs bandwidth_mbps > 0 and rtt_ms >= 0, got {self.bandwidth_mbps}, {self.rtt_ms}"
            )

    def transfer_us(self, nbytes: int) -> float:
        """One-way time to send ``nbytes`` (serialisation only; latency is in the round trip)."""
        return nbytes * 8 / (self.bandwidth_mbps * 1e6) * 1e6

    def comm_us(self, transfers: Sequence[int], round_trips: int) -> float:
        """T_cm of a path: every transfer's time plus half a round trip per transfer."""
        return sum(self.transfer_us(b) for b in transfers) + round_trips * self.rtt_ms * 1e3
