"""CoDE search: enumerate paths, estimate their costs, train links, score, select.

Two strategies return the same kind of result:

- ``exhaustive``: the paper's method. Every candidate is trained in full, then scored.
- ``fast``: (1) drop paths that break the latency bound (eq. 2) or cannot beat the original
  model's cost even at the original accuracy, before any training; (2) least-squares-initialise
  the links of the rest and screen them by validation accuracy; (3) successive halving on
  validation accuracy; (4) full training for the survivors only.

Selection uses the validation split; reported accuracies come from the test split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from codenn.config.run import RunConfig, from_dict
from codenn.config.search import SearchConfig
from codenn.contracts.plugins import Plugins, get_plugins
from codenn.contracts.protocols import Executor
from codenn.errors import ConfigError, FrozenParameterError
from codenn.model.profile import profile_blocks, resolve_device, time_module
from codenn.model.service import Service, services_by_name
from codenn.paths.composed import ComposedPath
from codenn.paths.cost import PathMeasures
from codenn.paths.rows import PathRow, pareto_front
from codenn.paths.space import PathSpace
from codenn.paths.spec import PaperIndices, PathSpec
from codenn.search.executors import InProcessExecutor
from codenn.search.jobs import PathJob, PathJobResult, PathWorker, state_links
from codenn.search.plotting import plot_pareto
from codenn.search.record import LinkManifest, RunRecord, SearchState
from codenn.search.store import RunStore
from codenn.train.data import Splits
from codenn.train.trainer import path_seed


@dataclass
class Candidate:
    """One path under consideration, with its measured structure and (later) accuracy."""

    spec: PathSpec
    path: ComposedPath | None
    measures: PathMeasures
    stats: dict[str, Any]
    status: str = "candidate"
    reason: str = ""
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    ls_accuracy: float | None = None
    ls_initialised: list[bool] = field(default_factory=list)
    state: bytes | None = None
    """The links' training state after the candidate's last job (:mod:`codenn.search.jobs`)."""
    epochs: int = 0
    train_samples: int = 0
    cost: float | None = None
    links_file: str | None = None

    @property
    def built(self) -> ComposedPath:
        """The path with its links, while the candidate is alive (its row emitted, they are freed)."""
        if self.path is None:
            raise ConfigError(f"path {self.spec} was already emitted ({self.status}); its links were freed")
        return self.path


@dataclass
class SearchResult:
    """Every path's row, the Pareto front, the selection and the paper's keep/discard decision."""

    rows: list[PathRow]
    original: PathRow
    selected: PathRow | None
    pareto: list[str]
    decision: str
    totals: dict[str, Any]
    run_dir: str | None = None

    def ranked(self) -> list[PathRow]:
        trained = [r for r in self.rows if r.status == "trained"]
        return sorted(trained, key=lambda r: (not r.feasible, _cost(r)))


Log = Callable[[str], None]


class Search:
    """Runs one search over the path space between ``local`` and ``hosts``."""

    def __init__(
        self,
        local: Service,
        hosts: Sequence[Service],
        splits: Splits,
        config: SearchConfig | None = None,
        *,
        run_dir: str | Path | None = None,
        plugins: Plugins | None = None,
        log: Log = print,
        on_path_done: Callable[[Candidate], None] | None = None,
        metadata: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
        run_config: RunConfig | None = None,
    ) -> None:
        self.config = config or SearchConfig()
        self.executor: Executor = executor or InProcessExecutor()
        self.job_seconds: dict[str, float] = {}
        """Seconds each path's jobs took on their workers (what a scheduler for more workers needs)."""
        self.local, self.hosts = local, list(hosts)
        self.services: dict[str, Service] = services_by_name([local, *self.hosts])
        self.splits = splits
        self.plugins = plugins or get_plugins()
        self.objective = self.plugins.objectives.get(self.config.cost.objective)
        self.plugins.link_factories.get(self.config.link)
        self.device = resolve_device(self.config.train.device)
        self.store = RunStore(run_dir) if run_dir is not None else None
        self.log = log
        self.on_path_done = on_path_done
        self.metadata = dict(metadata or {})
        self.run_config = run_config
        """The whole run's configuration, recorded so that every other command can rebuild the run."""
        head = local.card.boundaries[-1]
        if head.layout != "NC" or head.shape[0] != splits.num_classes:
            raise ConfigError(
                f"local service {local.name!r} outputs {head.shape}, but the data set {splits.name!r} has "
                f"{splits.num_classes} classes"
            )

    # -- setup --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        # the search's own worker: its caches score the original model, and the in-process
        # executor runs every job on it
        self.worker = PathWorker(self.services, self.splits, self.config, local=self.local.name, plugins=self.plugins,
                                 name="in-process")
        self.fingerprints = self.worker.fingerprints
        cfg = self.config
        self.block_us = {
            n: profile_blocks(s, batch_size=cfg.profile_batch, device=self.device, repeats=cfg.profile_repeats)
            for n, s in self.services.items()
        }
        self._link_us: dict[tuple[Any, ...], float] = {}

    def _original(self) -> Candidate:
        spec = PathSpec.parse(f"{self.local.name}[:]")
        path = ComposedPath(spec, self.services, plugins=self.plugins)
        cand = self._candidate(spec, path)
        cand.val_accuracy = self.worker.accuracy(path, "val")
        cand.test_accuracy = self.worker.accuracy(path, "test")
        self.l_a = cand.val_accuracy
        cand.cost = self._cost(cand, cand.val_accuracy)
        cand.status = "original"
        return cand

    # -- estimates ----------------------------------------------------------------------------
    def _candidate(self, spec: PathSpec, path: ComposedPath) -> Candidate:
        st = path.stats()
        local_name = spec.local
        times = {"local": 0.0, "host": 0.0}
        for seg in path.spec.segments:
            side = "local" if seg.service == local_name else "host"
            times[side] += sum(self.block_us[seg.service][b] for b in seg.blocks(self.services[seg.service].num_blocks))
        for link, (src, dst), side, factory in zip(path.links, path.link_specs, path.link_sides, path.link_factories):
            key = (factory, src, dst)
            if key not in self._link_us:
                self._link_us[key] = time_module(link, src, batch_size=self.config.profile_batch, device=self.device,
                                                 repeats=self.config.profile_repeats)
            times["local" if side == local_name else "host"] += self._link_us[key]
        visits = sum(1 for a, b in zip(path.spec.segments, path.spec.segments[1:]) if a.service == local_name != b.service)
        batch = self.config.profile_batch
        t_comm = self.config.network.comm_us([b * batch for b in st.boundary_bytes], visits) / batch if visits else 0.0
        m = PathMeasures(
            spec=str(path.spec), accuracy=math.nan,
            t_comm_us=t_comm, t_local_us=times["local"] / batch, t_host_us=times["host"] / batch,
            local_gflops=st.local_flops / 1e9, host_gflops=st.host_flops / 1e9,
            local_mparams=st.local_params / 1e6, host_mparams=st.host_params / 1e6,
        )
        return Candidate(path.spec, path, m, st.to_dict())

    def _cost(self, cand: Candidate, acc: float) -> float:
        return float(self.objective(replace(cand.measures, accuracy=acc), self.l_a, self.config.cost))

    def _build(self, spec: PathSpec) -> Candidate:
        torch.manual_seed(path_seed(self.config.train.seed, str(spec)))
        path = ComposedPath(spec, self.services, link=self.config.link, link_options=self.config.link_options,
                    plugins=self.plugins).to(self.device)
        return self._candidate(path.spec, path)

    # -- jobs ---------------------------------------------------------------------------------
    def _jobs(self, cands: Sequence[Candidate], job: Callable[[Candidate], PathJob], label: str) -> Iterator[Candidate]:
        """Run one job per candidate on the executor; yield each candidate as its result arrives
        (in the order jobs finish), with its accuracy, cost and state updated."""
        by_spec = {str(c.spec): c for c in cands}
        results = self.executor.map([job(c) for c in cands])
        for res in self._progress(results, label, total=len(cands)):
            cand = by_spec[res.spec]
            self._apply(cand, res)
            yield cand

    def _apply(self, cand: Candidate, res: PathJobResult) -> None:
        changed = [n for n, fp in res.fingerprints.items() if fp != self.fingerprints.get(n)]
        if changed:
            raise FrozenParameterError(f"worker {res.worker} trained path {res.spec} over services {changed} whose "
                                       "fingerprints differ from the search's")
        self.job_seconds[res.spec] = self.job_seconds.get(res.spec, 0.0) + res.seconds
        cand.state, cand.epochs, cand.train_samples = res.state, res.epochs, res.train_samples
        cand.ls_initialised = list(res.ls_initialised)
        if res.ls_accuracy is not None:
            cand.ls_accuracy = res.ls_accuracy
        cand.val_accuracy, cand.cost = res.val_accuracy, self._cost(cand, res.val_accuracy)
        if res.test_accuracy is not None:
            cand.test_accuracy = res.test_accuracy

    def _first_job(self, cand: Candidate) -> PathJob:
        """A whole path's training: least squares, the full budget, test accuracy."""
        return PathJob(str(cand.spec), ls_init=True, epochs=self.config.train.epochs, test=True)

    def _finish(self, cand: Candidate) -> None:
        """Full-budget training done (accuracies measured by the job): save links, emit the row."""
        cand.status = "trained"
        if self.store is not None:
            if cand.state is None:
                raise ConfigError(f"path {cand.spec} finished without a training state")
            cand.built.links.load_state_dict(state_links(cand.state))
            manifest = LinkManifest(
                str(cand.spec), tuple(cand.built.link_factories), tuple(cand.built.link_sides), self.config.link_options,
                {n: self.fingerprints[n] for n in cand.built.services}, _paper(cand.spec),
                path_seed(self.config.train.seed, str(cand.spec)),
                {"val_accuracy": cand.val_accuracy, "test_accuracy": cand.test_accuracy, "cost": cand.cost,
                 "epochs": cand.epochs})
            cand.links_file = str(self.store.save_links(str(cand.spec), cand.built.links, manifest))
        self._emit(cand)

    def _emit(self, cand: Candidate) -> None:
        row = self._row(cand)
        self.rows[str(cand.spec)] = row
        if self.store is not None:
            self.store.append_row(row)
        if cand.status == "trained":
            self.log(f"  trained {cand.spec}: val {cand.val_accuracy:.3f}, cost {cand.cost:.4f}")
        cand.state = None
        cand.path = None  # free the links and their training state
        if self.on_path_done is not None:
            self.on_path_done(cand)

    def _row(self, cand: Candidate) -> PathRow:
        m = cand.measures
        acc = cand.val_accuracy
        terms = self.config.cost.terms(replace(m, accuracy=acc), self.l_a) if acc is not None else {}
        try:
            ix: PaperIndices | None = cand.spec.indices
        except Exception:
            ix = None
        st = cand.stats
        return PathRow(
            spec=str(cand.spec), kind=cand.spec.kind, lout=ix.lout if ix else None, hin=ix.hin if ix else None,
            hout=ix.hout if ix else None, lin=ix.lin if ix else None, status=cand.status, reason=cand.reason,
            val_accuracy=cand.val_accuracy, test_accuracy=cand.test_accuracy, ls_accuracy=cand.ls_accuracy,
            ls_initialised=tuple(cand.ls_initialised), epochs=cand.epochs, train_samples=cand.train_samples,
            t_comm_us=m.t_comm_us, t_local_us=m.t_local_us, t_host_us=m.t_host_us, latency_us=m.latency_us,
            feasible=self.config.cost.feasible(m), link_params=st["link_params"], local_params=st["local_params"],
            host_params=st["host_params"], skipped_params=st["skipped_params"], local_gflops=m.local_gflops,
            host_gflops=m.host_gflops, **terms, cost=cand.cost, links_file=cand.links_file,
        )

    # -- entry points -------------------------------------------------------------------------
    def train_one(self, spec: PathSpec | str) -> PathRow:
        """Train a single path in full (least-squares init, then ``train.epochs``) and save it.

        With a run directory, the path is written as a run whose selection is this path (so
        evaluate, export, serve-host and serve accept it); rows of other paths trained there
        with the same configuration are kept, a directory of another configuration is refused.
        """
        t0 = time.perf_counter()
        self._start()
        parsed = PathSpec.parse(spec) if isinstance(spec, str) else spec
        cand = self._build(parsed)
        self._apply(cand, self.worker.run(self._first_job(cand)))
        self.resumed.discard(str(cand.spec))
        self._finish(cand)
        for service in self.services.values():
            service.verify_frozen()
        row = self.rows[str(cand.spec)]
        self._result(len(self.rows), time.perf_counter() - t0, selected=row)
        return row

    def _start(self) -> Candidate:
        """Shared start of a search and of one path's training: resume what the run directory
        holds (same configuration, same service weights), score the original model, write run.json."""
        done: dict[str, PathRow] = {}
        if self.store is not None and self.store.check_resumable(self.config.hash()):
            done = {r.spec: r for r in self.store.rows()}
            self.log(f"resuming {self.store.root}: {len(done)} paths already final")
        self._prepare()
        if done and self.store is not None:
            self.store.check_fingerprints(self.fingerprints)
        self.rows: dict[str, PathRow] = dict(done)
        self.resumed = set(done)
        original = self._original()
        self.original_row = self._row(original)
        if self.store is not None:
            self.store.write_record(self._record(None, None, [], {}))
        return original

    def run(self, specs: Sequence[PathSpec | str] | None = None) -> SearchResult:
        """Search the configured path space, or only ``specs`` when given (e.g. the paper's sweeps)."""
        t0 = time.perf_counter()
        cfg = self.config
        original = self._start()
        if specs is None:
            paths = list(PathSpace.between(self.local, self.hosts, cfg.space))
        else:
            paths = [PathSpec.parse(s) if isinstance(s, str) else s for s in specs]
        if not paths:
            raise ConfigError("the path space is empty: allow skip or cross paths, or lower min_skipped")
        todo = [s for s in paths if str(s.resolve({n: v.num_blocks for n, v in self.services.items()})) not in self.resumed]
        self.log(f"{cfg.strategy} search over {len(paths)} paths ({len(todo)} to do); original val accuracy "
                 f"L_A = {self.l_a:.3f}, cost {original.cost:.4f}")
        if todo:  # a finished run resumed: no worker to start
            self.executor.start(self.worker)
        try:
            if cfg.strategy == "exhaustive":
                self._exhaustive(todo)
            else:
                self._fast(todo, _by_cost(original))
        finally:
            self.executor.close()
        for service in self.services.values():
            service.verify_frozen()
        return self._result(len(paths), time.perf_counter() - t0)

    def _check_bound(self, cands: Sequence[Candidate]) -> None:
        """Eq. (2) with a bound no candidate (nor the original) can meet is a configuration error."""
        bound = self.config.cost.latency_bound_us
        if bound is None or not cands:
            return
        fastest = min(c.measures.latency_us for c in cands)
        if fastest > bound and self.original_row.latency_us > bound:
            raise ConfigError(
                f"latency bound L_T = {bound:.0f} us cannot be met: the fastest candidate path is estimated at "
                f"{fastest:.0f} us and the original model at {self.original_row.latency_us:.0f} us"
            )

    def _progress(self, items: Any, label: str, total: int | None = None) -> Any:
        if not self.config.train.progress:
            return items
        from rich.progress import track

        return track(items, description=label, transient=True, total=total)

    def _exhaustive(self, todo: Sequence[PathSpec]) -> None:
        cands = [self._build(spec) for spec in self._progress(todo, "exhaustive: estimating costs")]
        self._check_bound(cands)
        for cand in self._jobs(cands, self._first_job, "exhaustive: training every path"):
            self._finish(cand)

    def _fast(self, todo: Sequence[PathSpec], original_cost: float) -> None:
        cfg, fast = self.config, self.config.fast
        state = self.store.state() if self.store is not None else None
        if state and set(state.survivors) == {str(s) for s in todo}:
            # resume: rebuild the survivors exactly (deterministic per-path training) and go on
            alive = [self._build(s) for s in todo]
            epochs = state.epochs
            list(self._jobs(alive, lambda c: PathJob(str(c.spec), ls_init=True, epochs=epochs[str(c.spec)]),
                            "fast: rebuilding the survivors"))
            rung = state.rung
            self.log(f"  resumed {len(alive)} survivors at rung {rung}")
        else:
            alive = self._screen(todo, original_cost)
            rung = fast.first_rung_epochs
        while len(alive) > fast.final_keep and min(c.epochs for c in alive) + rung < cfg.train.epochs:
            def rung_job(c: Candidate, n: int = rung) -> PathJob:
                return PathJob(str(c.spec), epochs=n, state=c.state)

            list(self._jobs(alive, rung_job, f"fast: halving rung ({len(alive)} paths, {rung} epoch(s))"))
            keep = max(fast.final_keep, math.ceil(len(alive) / fast.eta))
            alive, dropped = self._kept(alive, keep)
            for cand in dropped:
                cand.status, cand.reason = "pruned", (
                    f"halving: val accuracy {cand.val_accuracy:.3f} after {cand.epochs} epoch(s) ranks below the top {keep}")
                self._emit(cand)
            rung *= fast.eta
            if self.store is not None:
                self.store.save_state(SearchState(rung, tuple(str(c.spec) for c in alive),
                                                  {str(c.spec): c.epochs for c in alive}))
        for cand in self._jobs(alive, lambda c: PathJob(str(c.spec), epochs=cfg.train.epochs - c.epochs, state=c.state,
                                                        test=True), "fast: full training of survivors"):
            self._finish(cand)

    def _screen(self, todo: Sequence[PathSpec], original_cost: float) -> list[Candidate]:
        """Pruning before training, then least-squares screening; returns the survivors."""
        cfg, fast = self.config, self.config.fast
        best_acc = 1.0 if fast.bound_accuracy == "perfect" else self.l_a
        alive: list[Candidate] = []
        cands = [self._build(spec) for spec in self._progress(todo, "fast: estimating costs")]
        self._check_bound(cands)
        for cand in cands:
            if not cfg.cost.feasible(cand.measures):
                cand.status, cand.reason = "pruned", (
                    f"latency {cand.measures.latency_us:.0f} us > L_T {cfg.cost.latency_bound_us:.0f} us")
                self._emit(cand)
            elif (bound := self._cost(cand, best_acc)) >= original_cost:
                cand.status, cand.reason = "pruned", (
                    f"cost lower bound {bound:.4f} (at accuracy {best_acc:.3f}) >= original cost {original_cost:.4f}")
                self._emit(cand)
            else:
                alive.append(cand)
        self.log(f"  {len(alive)} paths left after latency and cost-bound pruning")
        # sorted by spec, so that paths sharing a prefix follow each other and a worker's
        # screener reuses their fits
        list(self._jobs(sorted(alive, key=lambda c: str(c.spec)), lambda c: PathJob(str(c.spec), screen=True),
                        "fast: least-squares screening"))
        kept, dropped = self._kept(alive, fast.screen_keep)
        for cand in dropped:
            cand.status, cand.reason = "pruned", (
                f"screen: least-squares val accuracy {cand.ls_accuracy:.3f} ranks below the top {fast.screen_keep}")
            self._emit(cand)
        return kept

    def _kept(self, cands: Sequence[Candidate], n: int) -> tuple[list[Candidate], list[Candidate]]:
        """(kept, dropped): the ``n`` cheapest, plus the ``fast.keep_cross`` cheapest cross paths."""
        ranked = sorted(cands, key=_by_cost)
        cross = [c for c in ranked if c.spec.kind == "cross"][: self.config.fast.keep_cross]
        keep = {id(c) for c in (*ranked[:n], *cross)}
        return [c for c in ranked if id(c) in keep], [c for c in ranked if id(c) not in keep]

    # -- results ------------------------------------------------------------------------------
    def _result(self, paths: int, seconds: float, selected: PathRow | None = None) -> SearchResult:
        """Selection (unless given: ``train_one`` selects its path), decision, totals; run.json and
        pareto.png when there is a run directory."""
        rows = list(self.rows.values())
        trained = [r for r in rows if r.status == "trained"]
        if selected is None:
            selected = min((r for r in trained if r.feasible), key=_cost, default=None)
        pareto = pareto_front(trained)
        orig_cost = _cost(self.original_row)
        if selected is None:
            decision = "discard: no trained path meets the latency bound; keep the original model"
        elif not selected.feasible:
            decision = f"discard {selected.spec}: its latency {selected.latency_us:.0f} us breaks the latency bound"
        elif _cost(selected) < orig_cost:
            decision = f"keep {selected.spec}: cost {_cost(selected):.4f} < original {orig_cost:.4f}"
        else:
            decision = f"discard {selected.spec}: cost {_cost(selected):.4f} >= original {orig_cost:.4f}"
        totals = {
            "paths": paths,
            "trained": len(trained),
            "pruned": sum(1 for r in rows if r.status == "pruned"),
            "train_samples": sum(r.train_samples for r in rows),
            "train_samples_this_session": sum(r.train_samples for k, r in self.rows.items() if k not in self.resumed),
            "wall_seconds": round(seconds, 2),
        }
        if self.store is not None:
            self.store.write_record(self._record(selected, decision, pareto, totals))
            plot_pareto(rows, self.original_row, selected, self.store.root / "pareto.png")
        return SearchResult(rows, self.original_row, selected, pareto, decision, totals,
                            str(self.store.root) if self.store else None)

    def _record(self, selected: PathRow | None, decision: str | None, pareto: list[str],
                totals: dict[str, Any]) -> RunRecord:
        """What every reader of the run needs (:class:`codenn.search.store.RunStore`): configuration and
        its hash, every service's card (fingerprint included), the data, the original model's row,
        the selection, and the caller's metadata (``codenn search``/``train`` give the run config)."""
        meta = dict(self.metadata)
        raw = meta.pop("run_config", None)
        run = self.run_config or (None if raw is None else from_dict(raw))
        return RunRecord(
            run, self.config.hash(), self.config.to_dict(), {n: s.card for n, s in self.services.items()},
            {"name": self.splits.name, **self.splits.sizes(), "num_classes": self.splits.num_classes},
            self.original_row, selected, decision, tuple(pareto), totals, meta.pop("base_models", {}), meta)


def _cost(row: PathRow) -> float:
    """A scored row's cost: trained rows and the original have one unless results.jsonl was edited."""
    if row.cost is None:
        raise ConfigError(f"the {row.status} row of path {row.spec!r} has no cost; a trained or original row "
                          "needs every term of eq. (1) (was results.jsonl written by hand?)")
    return row.cost


def _paper(spec: PathSpec) -> str | None:
    try:
        return spec.paper_form()
    except Exception:
        return None


def _by_cost(cand: Candidate) -> float:
    """A candidate's cost for ranking; one not scored yet ranks last."""
    return math.inf if cand.cost is None else cand.cost
