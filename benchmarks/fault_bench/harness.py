"""What every part of the fault benchmark shares: the real server processes and the run they serve,
the targets, request plumbing, process records (memory, logged exceptions) and timing.

The servers are real ``python -m codenn serve-host`` / ``codenn serve`` processes on 127.0.0.1,
started and always stopped by benchmarks/serving.py's ``server`` (each pinned to one core with one
torch thread); :class:`Bench` holds the run they serve and writes their command lines.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path as FsPath
from typing import Any
from urllib.parse import quote

import torch

SERVING_SCRIPT = FsPath(__file__).resolve().parents[1] / "serving.py"
OUT = "benchmarks/results/faults.json"
TOKENS = {"trainer": "fuzz-trainer-token-0123456789", "reader": "fuzz-reader-token-0123456789",
          "nobody": "fuzz-nobody-token-0123456789", "pinner": "fuzz-pinner-token-0123456789"}
"""Roles of the callers: the local provider (train rights), one that may only infer, one with no rights,
and a second provider with train rights whose only use is to measure what pending steps pin."""
BAD_TOKEN = "not-a-registered-token-000"
CLIENT_TOKEN = "faults-bench-client-token-42"
LOOPBACK = "http://127.0.0.1"


def token_file(local_name: str) -> dict[str, Any]:
    """The host's token file: the local provider may infer and train everything, ``reader`` may
    only infer, ``nobody`` may do nothing (403 everywhere); ``pinner`` may train, and only
    measures memory (its split-training state is fresh when it starts)."""
    return {local_name: {"token": TOKENS["trainer"], "infer": ["*"], "train": ["*"]},
            "reader": {"token": TOKENS["reader"], "infer": ["*"], "train": []},
            "nobody": {"token": TOKENS["nobody"], "infer": [], "train": []},
            "pinner": {"token": TOKENS["pinner"], "infer": ["*"], "train": ["*"]}}


def load_serving() -> Any:
    """benchmarks/serving.py as a module: its set-up (prepare_run, server, wait_ready, free_port)."""
    name = "serving_benchmark"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SERVING_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- process records --------------------------------------------------------------------------------
def _status_mib(pid: int, field: str) -> float | None:
    """A memory line of ``/proc/PID/status`` in MiB; None once the process is gone."""
    try:
        for line in FsPath(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mib(pid: int) -> float | None:
    """``VmHWM`` (peak resident memory) of a live process in MiB; None once it is gone."""
    return _status_mib(pid, "VmHWM")


def rss_mib(pid: int) -> float | None:
    """``VmRSS`` (resident memory now) of a live process in MiB."""
    return _status_mib(pid, "VmRSS")


def log_exceptions(log_file: FsPath) -> dict[str, int]:
    """The exceptions a server process logged (the last line of each traceback), counted."""
    if not log_file.exists():
        return {}
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
    lines = log_file.read_text(errors="replace").splitlines()
    return dict(Counter(line[:160] for line in lines if pattern.match(line)))


def percentile(values: Sequence[float], q: float) -> float | None:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1)))] if v else None


# -- timing and output ------------------------------------------------------------------------------
def timed(part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``part()``'s record with the seconds it took added as ``wall_s``."""
    t0 = time.perf_counter()
    record = part()
    record["wall_s"] = time.perf_counter() - t0
    return record


def say(message: str) -> None:
    print(message, flush=True)


def emit(record: Any) -> None:
    """One record as a JSON line on stdout."""
    print(json.dumps(record), flush=True)


# -- request plumbing ---------------------------------------------------------------------------------
def model_url(model: str) -> str:
    """The OIP path of a served model."""
    return f"/v2/models/{quote(model, safe='')}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def alive(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclasses.dataclass(frozen=True)
class Target:
    """A served model as its metadata describes it, and where it is."""

    url: str
    model: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    max_bytes: int

    @classmethod
    def discover(cls, url: str, model: str, token: str, max_bytes: int) -> Target:
        import httpx

        meta = httpx.get(f"{url}{model_url(model)}", headers=bearer(token), timeout=30).raise_for_status().json()
        shape = {t["name"]: tuple(t["shape"][1:]) for t in (*meta["inputs"], *meta["outputs"])}
        return cls(url, model, shape["input"], shape["output"], max_bytes)


# -- the run and its servers ------------------------------------------------------------------------
def local_service(run_dir: FsPath) -> tuple[Any, Any]:
    """The run's local service and scenario (base models from the cache), as ``codenn serve`` builds them."""
    from codenn.search.store import RunStore
    from codenn.train.scenario import scenario_from_config

    run = RunStore.open(run_dir).run_config()
    return scenario_from_config(run, log=lambda m: None), run


@dataclasses.dataclass
class Bench:
    """The run every part serves (the serving benchmark's cross path), its probe inputs, and the
    folder where the servers keep their token files and logs."""

    serving: Any
    run_dir: FsPath
    tmp: FsPath
    cross: str
    model: str
    local_name: str
    host_name: str
    scenario: Any
    run_cfg: Any
    x_test: torch.Tensor
    x_probe: torch.Tensor

    @classmethod
    def prepare(cls, serving: Any, run_dir: FsPath, tmp: FsPath) -> Bench:
        """Train the cross path into ``run_dir`` if needed (reused otherwise), build the local service,
        compute the probe (the local prefix of 16 test images) and write the token files into ``tmp``."""
        from codenn.paths.spec import PathSpec, slug
        from codenn.search.store import RunStore

        x_test, _ = serving.prepare_run(run_dir, serving.CROSS, 3)
        store = RunStore.open(run_dir)
        cross = str(PathSpec.parse(serving.CROSS).resolve(store.block_counts()))
        spec = PathSpec.parse(cross)
        local_name = spec.local
        host_name = next(s.service for s in spec.segments if s.service != local_name)
        scenario, run_cfg = local_service(run_dir)
        local = scenario.local
        lout = spec.one_host_visit({local.name: local.num_blocks}, local=local.name).lout
        with torch.inference_mode():
            x_probe = local.run(x_test[:16], 0, lout + 1)
        bench = cls(serving, run_dir, tmp, cross, slug(cross), local_name, host_name, scenario, run_cfg, x_test, x_probe)
        bench.write_tokens()
        return bench

    @property
    def local(self) -> Any:
        return self.scenario.local

    def write_tokens(self) -> None:
        (self.tmp / "host-tokens.json").write_text(json.dumps(token_file(self.local_name)))
        (self.tmp / "clients.json").write_text(json.dumps({"bench": CLIENT_TOKEN}))
        (self.tmp / "hosts.json").write_text(json.dumps({self.host_name: TOKENS["trainer"]}))

    def host_args(self, *extra: str) -> list[str]:
        """``codenn serve-host`` for the cross path's host part, open to the callers of :func:`token_file`."""
        return ["serve-host", "--run", str(self.run_dir), "--service", self.host_name, "--token-file",
                str(self.tmp / "host-tokens.json"), "--spec", self.cross, *extra]

    def local_args(self, remote: str, *extra: str) -> list[str]:
        """``codenn serve`` (the local provider) for the cross path through the host at ``remote``."""
        return ["serve", "--run", str(self.run_dir), "--token-file", str(self.tmp / "clients.json"), "--spec", self.cross,
                "--remote", f"{self.host_name}={remote}", "--host-token-file", str(self.tmp / "hosts.json"), *extra]

    def free_port(self) -> int:
        port: int = self.serving.free_port()
        return port

    def start(self, args: list[str], core: int, log_name: str, port: int) -> Any:
        """A server process (``python -m codenn ARGS --port PORT``) logging to ``tmp/LOG_NAME``, as a
        context manager: ready when entered, stopped (SIGTERM, then SIGKILL) when left."""
        return self.serving.server(args, core, self.tmp / log_name, port)

    def logged(self, *log_names: str) -> dict[str, int]:
        """The exceptions the servers logged into ``tmp/LOG_NAME`` (merged)."""
        out: dict[str, int] = {}
        for name in log_names:
            out.update(log_exceptions(self.tmp / name))
        return out
