"""Both halves of cross-provider work, without any HTTP: on the host, the served segment of a path
(entry link, frozen host blocks, exit link), per-provider split-training state, access rights and
the data plane every request passes; on the local side, the remote leg, split training through a
transport and the coordinator that routes requests; between them, the transport contract, reply
checks and what a server serves. The FastAPI, uvicorn and httpx shells over these live in
:mod:`codenn_adapters`.

Names are imported on first use (:mod:`codenn.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codenn.lazy import lazy_exports

if TYPE_CHECKING:
    from codenn.remote.access import AccessList, Provider, access_from, load_access
    from codenn.remote.coordinator import Coordinator, Decision, Route, RouteInfo
    from codenn.remote.dataplane import DataPlane
    from codenn.remote.host import checkpoint_file, resume_checkpoints, segments_from_run
    from codenn.remote.leg import RemoteLeg, RemotePath, RemoteSegment
    from codenn.remote.local_model import CoordinatedModel, coordinator_from_run
    from codenn.remote.segment import HostSegment
    from codenn.remote.served_model import Served, ServedModel, TrainableModel
    from codenn.remote.split_state import SegmentStateError
    from codenn.remote.split_trainer import SplitTrainer
    from codenn.remote.transport import check_host_reply, make_transport

_EXPORTS = {
    "AccessList": "codenn.remote.access",
    "Provider": "codenn.remote.access",
    "access_from": "codenn.remote.access",
    "load_access": "codenn.remote.access",
    "Coordinator": "codenn.remote.coordinator",
    "Decision": "codenn.remote.coordinator",
    "Route": "codenn.remote.coordinator",
    "RouteInfo": "codenn.remote.coordinator",
    "DataPlane": "codenn.remote.dataplane",
    "checkpoint_file": "codenn.remote.host",
    "resume_checkpoints": "codenn.remote.host",
    "segments_from_run": "codenn.remote.host",
    "RemoteLeg": "codenn.remote.leg",
    "RemotePath": "codenn.remote.leg",
    "RemoteSegment": "codenn.remote.leg",
    "CoordinatedModel": "codenn.remote.local_model",
    "coordinator_from_run": "codenn.remote.local_model",
    "HostSegment": "codenn.remote.segment",
    "Served": "codenn.remote.served_model",
    "ServedModel": "codenn.remote.served_model",
    "TrainableModel": "codenn.remote.served_model",
    "SegmentStateError": "codenn.remote.split_state",
    "SplitTrainer": "codenn.remote.split_trainer",
    "check_host_reply": "codenn.remote.transport",
    "make_transport": "codenn.remote.transport",
}
__all__ = [
    "AccessList", "CoordinatedModel", "Coordinator", "DataPlane", "Decision", "HostSegment", "Provider", "RemoteLeg",
    "RemotePath", "RemoteSegment", "Route", "RouteInfo", "SegmentStateError", "Served", "ServedModel",
    "SplitTrainer", "TrainableModel", "access_from", "check_host_reply", "checkpoint_file", "coordinator_from_run",
    "load_access", "make_transport", "resume_checkpoints", "segments_from_run",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
