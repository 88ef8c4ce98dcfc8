"""Where a search's jobs run (issue 14): the job protocol replayed on a worker rebuilt from the run's
configuration gives the run the in-process executor gives; the errors a cluster user meets; and,
with Ray installed (``-m ray``, in ``make test-all``), the Ray executor itself, a killed worker
included."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path as FsPath

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load as load_tensors
from safetensors.torch import load_file

from codenn import hookimpl
from codenn.cli import cli
from codenn.config.run import RunConfig, from_dict
from codenn.contracts.plugins import create_plugins
from codenn.errors import ConfigError, FrozenParameterError, MissingWeightsError
from codenn.search.executors import InProcessExecutor, executor_for
from codenn.search.jobs import PathJob, PathJobResult, PathWorker, WorkerExpectations
from codenn.search.strategies import Search, SearchResult
from codenn.train.scenario import Scenario, scenario_from_config


def small_run(toml_text: str) -> RunConfig:
    """conftest's small search, with three epochs per path, a wider screen and an objective
    without profiled times."""
    data = tomllib.loads(toml_text)
    data["train"].update(epochs=3, progress=False)
    data["fast"].update(screen_keep=4, keep_cross=1)
    data["cost"] = {"objective": "compute_only"}
    return from_dict(data)


class ComputeOnly:
    """Eq. (1) without its time terms: profiled times differ from one run to the next, and the
    two runs compared here must rank paths the same."""

    @hookimpl
    def codenn_register_objectives(self, register) -> None:
        register("compute_only", lambda m, l_a, model: math.exp(model.a * (l_a - m.accuracy)) + m.local_gflops)


PLUGINS = create_plugins(extra=[ComputeOnly()])


@pytest.fixture(scope="module")
def small(tmp_path_factory, small_search_toml) -> Iterator[tuple[RunConfig, Scenario]]:
    """The small scenario's base models, trained once into a module-wide cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODENN_CACHE", str(cache))
        run = small_run(small_search_toml)
        yield run, scenario_from_config(run, log=lambda m: None)


class RebuiltWorkerExecutor:
    """What a remote executor does, without Ray: one worker built from the run's configuration
    and cached weights (not the search's services), checked against the search's expectations,
    and jobs finished out of order (last first)."""

    name = "rebuilt"

    def __init__(self, run: RunConfig) -> None:
        self.run = run
        self.worker: PathWorker | None = None
        self.jobs_seen = 0

    def start(self, worker: PathWorker) -> None:
        self.worker = PathWorker.from_run(dataclasses.replace(self.run, search=worker.config), name="rebuilt")
        assert all(self.worker.services[n] is not s for n, s in worker.services.items())
        self.worker.check(worker.expectations())

    def map(self, jobs: Sequence[PathJob]) -> Iterator[PathJobResult]:
        assert self.worker is not None
        for job in reversed(list(jobs)):
            self.jobs_seen += 1
            yield self.worker.run(job)

    def close(self) -> None:
        self.worker = None


def search(run: RunConfig, sc: Scenario, out: FsPath | None, executor=None, **kw) -> SearchResult:
    return Search(sc.local, sc.hosts, sc.splits, run.search, run_dir=out, log=lambda m: None, executor=executor,
                  plugins=PLUGINS, **kw).run()


def same_rows(a: SearchResult, b: SearchResult) -> None:
    keys = ("status", "reason", "val_accuracy", "test_accuracy", "ls_accuracy", "ls_initialised", "epochs",
            "train_samples", "cost")
    rows_a = {r.spec: tuple(getattr(r, k) for k in keys) for r in a.rows}
    rows_b = {r.spec: tuple(getattr(r, k) for k in keys) for r in b.rows}
    assert rows_a == rows_b
    assert (a.selected and a.selected.spec) == (b.selected and b.selected.spec) and a.decision == b.decision


@pytest.mark.parametrize("strategy", ["fast", "exhaustive"])
def test_jobs_on_a_rebuilt_worker_give_the_in_process_run(small, tmp_path, strategy, one_torch_thread) -> None:
    run, sc = small
    if strategy == "exhaustive":  # a smaller space keeps the test short
        run = dataclasses.replace(run, search=dataclasses.replace(
            run.search, strategy="exhaustive", train=dataclasses.replace(run.search.train, epochs=1),
            space=dataclasses.replace(run.search.space, cross=False)))
    here = search(run, sc, tmp_path / "here")
    rebuilt = RebuiltWorkerExecutor(run)  # loads the services from the module's cache
    there = search(run, sc, tmp_path / "there", executor=rebuilt)
    assert rebuilt.jobs_seen > 0 and there.totals["trained"] >= 1
    if strategy == "fast":
        assert {r.status for r in there.rows} == {"trained", "pruned"}
    same_rows(here, there)
    # the links saved by the search's own process are the same tensors
    for r in here.rows:
        if r.status == "trained":
            ours, theirs = (load_file(FsPath(d) / "links" / FsPath(r.links_file).name) for d in (here.run_dir, there.run_dir))
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # every service is bit-identical after the run, on both sides
    for s in (sc.local, *sc.hosts):
        s.verify_frozen()


def test_a_run_interrupted_on_one_executor_resumes_on_the_other(small, tmp_path, one_torch_thread) -> None:
    run, sc = small
    run = dataclasses.replace(run, search=dataclasses.replace(
        run.search, strategy="exhaustive", train=dataclasses.replace(run.search.train, epochs=1),
        space=dataclasses.replace(run.search.space, cross=False)))

    class Stop(Exception):
        pass

    done: list[str] = []

    def interrupt(cand) -> None:
        done.append(str(cand.spec))
        if len(done) == 2:
            raise Stop

    full = search(run, sc, tmp_path / "full")
    with pytest.raises(Stop):
        search(run, sc, tmp_path / "run", executor=RebuiltWorkerExecutor(run), on_path_done=interrupt)
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 2
    resumed = search(run, sc, tmp_path / "run", executor=InProcessExecutor())
    same_rows(full, resumed)
    assert resumed.totals["train_samples_this_session"] < full.totals["train_samples"]


def test_a_worker_refuses_other_weights_other_data_and_missing_weights(small, tmp_path, monkeypatch) -> None:
    run, sc = small
    worker = PathWorker({s.name: s for s in (sc.local, *sc.hosts)}, sc.splits, run.search, local="mnv3", name="w1")
    good = worker.expectations()
    worker.check(good)
    bad = WorkerExpectations({**good.fingerprints, "host": "0" * 64}, good.data_digest, good.search_hash)
    with pytest.raises(FrozenParameterError, match=r"service 'host' on worker w1 has fingerprint"):
        worker.check(bad)
    with pytest.raises(ConfigError, match=r"data set .* on worker w1 differs"):
        worker.check(WorkerExpectations(good.fingerprints, "f" * 64, good.search_hash))
    with pytest.raises(ConfigError, match=r"search configuration on worker w1 differs"):
        worker.check(WorkerExpectations(good.fingerprints, good.data_digest, "0" * 16))
    with pytest.raises(ConfigError, match=r"service 'other' is missing on worker w1"):
        worker.check(WorkerExpectations({**good.fingerprints, "other": "0" * 64}, good.data_digest, good.search_hash))
    monkeypatch.setenv("CODENN_CACHE", str(tmp_path / "empty"))
    with pytest.raises(MissingWeightsError, match=rf"no cached weights for base model 'mobilenet_v3_small' on 'digits' on host "
                                                  rf"'{socket.gethostname()}': expected .*empty/base/.*safetensors"):
        PathWorker.from_run(run)


def test_a_job_state_round_trips_exactly(small, one_torch_thread) -> None:
    """Two epochs in one job == one epoch, then one more from the returned state (optimizer
    moments and batch order included): what lets a rung continue on another worker."""
    run, sc = small
    worker = PathWorker({s.name: s for s in (sc.local, *sc.hosts)}, sc.splits, run.search, local="mnv3")
    spec = "mnv3[:2] > host[1:2] > mnv3[4:]"
    whole = worker.run(PathJob(spec, ls_init=True, epochs=2))
    first = worker.run(PathJob(spec, ls_init=True, epochs=1))
    second = worker.run(PathJob(spec, epochs=1, state=first.state))
    assert (second.epochs, second.train_samples) == (whole.epochs, whole.train_samples) == (2, 2 * len(sc.splits.train))
    assert second.val_accuracy == whole.val_accuracy
    ours, theirs = load_tensors(second.state), load_tensors(whole.state)
    assert ours.keys() == theirs.keys() and any(k.startswith("opt.") for k in ours) and "generator" in ours
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert second.ls_initialised == whole.ls_initialised
    with pytest.raises(ConfigError, match="screens or trains"):
        PathJob(spec, screen=True, epochs=1)


def test_executor_choice_and_cluster_errors_are_clear(tmp_path, monkeypatch, request) -> None:
    assert isinstance(executor_for(RunConfig()), InProcessExecutor)
    run = from_dict({"executor": {"name": "nope"}})
    with pytest.raises(Exception, match=r"unknown executor 'nope'; valid: 'inprocess', 'ray'"):
        executor_for(run)
    # the executor is not part of the run's hash: a directory written on a cluster resumes here
    assert from_dict({"executor": {"name": "ray", "workers": 4}}).hash() == RunConfig().hash()
    with pytest.raises(ConfigError, match=r"\[executor\] has unknown key\(s\) \['nodes'\]"):
        from_dict({"executor": {"nodes": 3}})
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        from_dict({"executor": {"workers": 0}})
    from codenn_adapters.ray_search import ClusterUnreachableError, check_reachable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterUnreachableError, match=rf"no Ray cluster answers at '127.0.0.1:{port}'"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        check_reachable("nowhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CODENN_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(cli, ["search", "--executor", "nope", "--quiet"])
    assert res.exit_code == 1 and "unknown executor 'nope'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "cache").exists()  # refused before any base model was trained
    # without Ray installed: the install line, also before any base model is trained
    request.getfixturevalue("without_ray")
    res = CliRunner().invoke(cli, ["search", "--executor", "ray", "--quiet"])
    assert res.exit_code == 1 and "codenn search --executor ray needs Ray: pip install 'codenn[ray]'" in res.output
    assert not (tmp_path / "cache").exists()


# -- Ray (pip install 'codenn[ray]'; pytest -m ray, or make test-all) -------------------------------
def _ray_executor(run: RunConfig, **kw):
    pytest.importorskip("ray")
    from codenn_adapters.ray_search import RayExecutor

    return RayExecutor(run, log=lambda m: None, **kw)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_executor_gives_the_in_process_run(small, tmp_path, one_torch_thread) -> None:
    run, sc = small
    executor = _ray_executor(run, workers=2)
    here = search(run, sc, tmp_path / "here")
    there = search(run, sc, tmp_path / "there", executor=executor)
    same_rows(here, there)
    assert json.loads((tmp_path / "there" / "run.json").read_text())["selected"]["spec"] == here.selected.spec


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_ray_worker_costs_one_retry(small, tmp_path, one_torch_thread) -> None:
    run, sc = small
    run = dataclasses.replace(run, search=dataclasses.replace(
        run.search, strategy="exhaustive", train=dataclasses.replace(run.search.train, epochs=2),
        space=dataclasses.replace(run.search.space, cross=False)))
    here = search(run, sc, tmp_path / "here")
    executor = _ray_executor(run, workers=2)
    killed: list[int] = []

    def kill_one(cand) -> None:
        if not killed:  # after the first path: one worker is busy with the next one
            pid = executor.worker_pids()[0]
            threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
            killed.append(pid)

    there = search(run, sc, tmp_path / "there", executor=executor, on_path_done=kill_one)
    assert killed and len(executor.retried) == 1  # the job the killed worker ran (or was given next)
    same_rows(here, there)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_workers_refuse_other_weights_and_name_their_host(small, tmp_path) -> None:
    from codenn_adapters.ray_search import WorkerSetupError

    run, sc = small
    worker = PathWorker({s.name: s for s in (sc.local, *sc.hosts)}, sc.splits, run.search, local="mnv3")
    good = worker.expectations()
    worker.expectations = lambda: WorkerExpectations({**good.fingerprints, "host": "0" * 64}, good.data_digest,
                                                     good.search_hash)
    executor = _ray_executor(run, workers=1)
    try:
        with pytest.raises(WorkerSetupError, match=rf"worker {socket.gethostname()}:\d+ .* service 'host' .* fingerprint"):
            executor.start(worker)
    finally:
        executor.close()


@pytest.mark.ray
@pytest.mark.slow
def test_cli_search_on_ray_then_resumed_in_process(small, tmp_path, monkeypatch, small_search_toml) -> None:
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.toml").write_text(small_search_toml + '[executor]\nname = "ray"\nworkers = 2\n')
    runner = CliRunner()
    res = runner.invoke(cli, ["search", "--config", "small.toml", "--out", "run", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "2 Ray worker(s) ready on a local cluster" in res.output and "selected:" in res.output
    rows = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    again = runner.invoke(cli, ["search", "--config", "small.toml", "--out", "run", "--quiet", "--executor", "inprocess"])
    assert again.exit_code == 0 and f"{len(rows)} paths already final" in again.output
    res = runner.invoke(cli, ["search", "--config", "small.toml", "--out", "other", "--quiet", "--address", "127.0.0.1:9"])
    assert res.exit_code == 1 and "no Ray cluster answers at '127.0.0.1:9'" in res.output and "Traceback" not in res.output
