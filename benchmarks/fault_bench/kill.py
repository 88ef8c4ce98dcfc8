"""Part 3: SIGKILL the host during split training (``serve-host --save-dir DIR --checkpoint-every K``)
and restart it with ``--resume`` while :meth:`codenn.remote.split_trainer.SplitTrainer.fit` runs
here; steps lost, recovery time, and whether the final links are finite."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

import torch

from .harness import LOOPBACK, TOKENS, Bench, emit, peak_rss_mib, say
from .poisoning import compare_probes, probe


class RecordingTransport:
    """A transport that notes when each backward succeeded (recovery time), delegating the rest."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.backward_done: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def train_backward(self, model: str, step: int, grad: torch.Tensor, timeout: float | None = None) -> float:
        seconds: float = self.inner.train_backward(model, step, grad, timeout=timeout)
        self.backward_done.append(time.monotonic())
        return seconds

    def train_state(self, model: str, timeout: float | None = None) -> dict[str, Any]:
        state: dict[str, Any] = self.inner.train_state(model, timeout=timeout)
        return state


def checkpoint_steps(file: FsPath) -> dict[str, Any]:
    """What a host checkpoint holds: applied steps per provider, whether every link weight is finite."""
    from safetensors import safe_open

    if not file.exists():
        return {"exists": False, "steps": 0, "links_finite": None}
    with safe_open(str(file), framework="pt") as fh:
        meta = fh.metadata() or {}
        finite = all(bool(torch.isfinite(fh.get_tensor(k)).all()) for k in fh.keys() if not k.startswith("optimizer/"))  # noqa: SIM118
    providers = json.loads(meta.get("providers", "{}"))
    return {"exists": True, "steps": sum(int(p["steps"]) for p in providers.values()), "links_finite": finite}


def _chaos(trainer: Any, finished: threading.Event, info: dict[str, Any], *, kill_at: int, host_checkpoint: FsPath,
           kill: Callable[[], None], restart: Callable[[], None], host_pid: Callable[[], int]) -> None:
    """The killer thread: waits for ``kill_at`` trainer steps, SIGKILLs the host, notes what its
    checkpoint holds and restarts it; times go into ``info``."""
    while trainer.steps < kill_at and not finished.is_set():
        time.sleep(0.002)
    if finished.is_set():
        return
    info["steps_before_kill"] = trainer.steps
    info["host_peak_mib_before_kill"] = peak_rss_mib(host_pid())
    info["t_kill"] = time.monotonic()
    kill()
    info["checkpoint_at_kill"] = checkpoint_steps(host_checkpoint)  # what the restarted host will hold
    restart()
    info["t_ready"] = time.monotonic()


def kill_during_training(trainer: Any, transport: RecordingTransport, *, epochs: int, kill_at: int,
                         checkpoint_every: int, host_checkpoint: FsPath, trainer_checkpoint: FsPath,
                         kill: Callable[[], None], restart: Callable[[], None], host_pid: Callable[[], int],
                         wait_for_host_s: float = 120.0) -> dict[str, Any]:
    """Part 3: ``trainer.fit`` here; a thread SIGKILLs the host once ``kill_at`` steps are done and
    restarts it with ``--resume``. Returns what was lost and how long recovery took."""
    info: dict[str, Any] = {}
    finished = threading.Event()
    thread = threading.Thread(target=_chaos, args=(trainer, finished, info), daemon=True,
                              kwargs={"kill_at": kill_at, "host_checkpoint": host_checkpoint, "kill": kill,
                                      "restart": restart, "host_pid": host_pid})
    thread.start()
    t0 = time.perf_counter()
    try:
        loss = trainer.fit(epochs, checkpoint=trainer_checkpoint, checkpoint_every=checkpoint_every,
                           wait_for_host_s=wait_for_host_s)
    finally:
        finished.set()
        thread.join(timeout=300)
    wall = time.perf_counter() - t0
    t_kill = info.get("t_kill")
    after = [t for t in transport.backward_done if t_kill is not None and t > t_kill]
    return {
        "killed": t_kill is not None,
        "steps_target": epochs * trainer.steps_per_epoch,
        "steps_done": trainer.steps,
        "steps_before_kill": info.get("steps_before_kill"),
        "host_steps_after_restart": info.get("checkpoint_at_kill", {}).get("steps"),
        "lost_steps": trainer.lost_steps,
        "checkpoint_every": checkpoint_every,
        "backward_retries": trainer.backward_retries,
        "restart_s": info["t_ready"] - t_kill if t_kill is not None and "t_ready" in info else None,
        "recover_s": after[0] - t_kill if after and t_kill is not None else None,
        "host_peak_mib_before_kill": info.get("host_peak_mib_before_kill"),
        "final_loss": loss,
        "wall_s": wall,
    }


def _training_set(bench: Bench, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The run's first ``--train-samples`` training images, their labels and the split-training config."""
    from codenn.train.data import tensors

    x_train, y_train = tensors(bench.scenario.splits.train)
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    cfg = dataclasses.replace(bench.run_cfg.search.train, epochs=args.train_epochs, batch_size=args.train_batch,
                              progress=False, amp=False)
    say(f"split training: {len(y_train)} samples, batch {args.train_batch}, {args.train_epochs} epoch(s), host "
        f"checkpoint every {args.checkpoint_every} steps, SIGKILL after step {args.kill_at}")
    return x_train, y_train, cfg


def part(bench: Bench, args: argparse.Namespace, peaks: dict[str, float | None]) -> dict[str, Any]:
    """Part 3 in the full run: host C, killed and restarted on the same port."""
    from codenn.remote.host import checkpoint_file
    from codenn.remote.split_trainer import SplitTrainer
    from codenn.train.features import FeatureCache
    from codenn_adapters.transports import HttpTransport

    save_dir, port_c, model = bench.tmp / "host-save", bench.free_port(), bench.model
    url_c = f"{LOOPBACK}:{port_c}"
    train_args = bench.host_args("--save-dir", str(save_dir), "--checkpoint-every", str(args.checkpoint_every))
    x_train, y_train, cfg = _training_set(bench, args)
    local = bench.local
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(bench.start(train_args, 1, "host-c.log", port_c))]
        transport = RecordingTransport(HttpTransport(url_c, token=TOKENS["trainer"], timeout=30))
        stack.callback(transport.inner.close)
        trainer = SplitTrainer(local, transport, model, cfg, FeatureCache({local.name: local}, x_train), y_train)

        def restart() -> None:
            procs.append(stack.enter_context(bench.start([*train_args, "--resume"], 1, "host-c2.log", port_c)))

        report = kill_during_training(
            trainer, transport, epochs=args.train_epochs, kill_at=args.kill_at, checkpoint_every=args.checkpoint_every,
            host_checkpoint=checkpoint_file(save_dir, model), trainer_checkpoint=bench.tmp / "trainer.json",
            kill=lambda: (procs[-1].kill(), procs[-1].wait()), restart=restart, host_pid=lambda: procs[-1].pid)
        report["probe_finite"] = compare_probes(probe(url_c, model, TOKENS["trainer"], bench.x_probe[:4]),
                                                probe(url_c, model, TOKENS["trainer"], bench.x_probe[:4]),
                                                exact=False)["poisoned"] == 0
        peaks["C before kill"] = report.pop("host_peak_mib_before_kill")
        peaks["C after restart"] = peak_rss_mib(procs[-1].pid)
    final = checkpoint_steps(checkpoint_file(save_dir, model))  # written at the graceful stop
    report.update(host_steps_final=final["steps"], final_links_finite=final["links_finite"])
    emit(report)
    report["logged_exceptions"] = bench.logged("host-c.log", "host-c2.log")
    return report
