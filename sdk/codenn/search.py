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

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path as FsPath
from typing import Any

import torch

from codenn.cost import CostModel, PathMeasures
from codenn.data import Splits, tensors
from codenn.errors import ConfigError
from codenn.paths import Path
from codenn.pathspace import PathSpace
from codenn.pathspec import PathSpec
from codenn.plugins import Plugins, get_plugins
from codenn.profile import Network, profile_blocks, resolve_device, time_module
from codenn.runstore import RunStore
from codenn.service import Service
from codenn.train import FeatureCache, LinkTrainer, Screener, TrainConfig, accuracy, init_path_links, path_seed

STRATEGIES = ("exhaustive", "fast")
# The accuracy assumed when bounding a path's cost before training: "perfect" (1.0) never drops a
# path that could win; "original" (L_A) also drops paths that would need to beat the original
# model's accuracy, which cross paths sometimes do.
BOUND_ACCURACIES = ("perfect", "original")


@dataclass(frozen=True)
class SpaceConfig:
    """Which candidate paths to consider (see :class:`codenn.pathspace.PathSpace`)."""

    skip: bool = True
    cross: bool = True
    min_skipped: int = 1
    max_hosts: int = 1
    hin: int | None = None
    hout: int | None = None


@dataclass(frozen=True)
class FastConfig:
    """Knobs of the fast strategy."""

    screen_keep: int = 8
    eta: int = 2
    first_rung_epochs: int = 1
    final_keep: int = 2
    bound_accuracy: str = "perfect"

    def __post_init__(self) -> None:
        if self.screen_keep < 1 or self.eta < 2 or self.first_rung_epochs < 1 or self.final_keep < 1:
            raise ConfigError(
                f"fast search needs screen_keep >= 1, eta >= 2, first_rung_epochs >= 1, final_keep >= 1; got {self}"
            )
        if self.bound_accuracy not in BOUND_ACCURACIES:
            raise ConfigError(f"bound_accuracy {self.bound_accuracy!r} is not one of {BOUND_ACCURACIES}")


@dataclass(frozen=True)
class SearchConfig:
    strategy: str = "fast"
    link: str = "conv1x1"
    link_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    cost: CostModel = field(default_factory=CostModel)
    network: Network = field(default_factory=Network)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    fast: FastConfig = field(default_factory=FastConfig)
    profile_batch: int = 1
    profile_repeats: int = 10

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown search strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.profile_batch < 1 or self.profile_repeats < 1:
            raise ConfigError(f"profile_batch and profile_repeats must be >= 1, got {self.profile_batch}, "
                              f"{self.profile_repeats}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hash(self) -> str:
        d = self.to_dict()
        d["train"].pop("progress", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Candidate:
    """One path under consideration, with its measured structure and (later) accuracy."""

    spec: PathSpec
    path: Path | None
    measures: PathMeasures
    stats: dict[str, Any]
    status: str = "candidate"
    reason: str = ""
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    ls_accuracy: float | None = None
    ls_initialised: list[bool] = field(default_factory=list)
    trainer: LinkTrainer | None = None
    cost: float | None = None
    links_file: str | None = None

    @property
    def epochs(self) -> int:
        return self.trainer.epochs_done if self.trainer else 0

    @property
    def train_samples(self) -> int:
        return self.trainer.samples_seen if self.trainer else 0


@dataclass
class SearchResult:
    """Every path's row, the Pareto front, the selection and the paper's keep/discard decision."""

    rows: list[dict[str, Any]]
    original: dict[str, Any]
    selected: dict[str, Any] | None
    pareto: list[str]
    decision: str
    totals: dict[str, Any]
    run_dir: str | None = None

    def ranked(self) -> list[dict[str, Any]]:
        trained = [r for r in self.rows if r["status"] == "trained"]
        return sorted(trained, key=lambda r: (not r["feasible"], r["cost"]))


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
        run_dir: str | FsPath | None = None,
        plugins: Plugins | None = None,
        log: Log = print,
        on_path_done: Callable[[Candidate], None] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config or SearchConfig()
        self.local, self.hosts = local, list(hosts)
        self.services: dict[str, Service] = {local.name: local, **{h.name: h for h in self.hosts}}
        if len(self.services) != len(self.hosts) + 1:
            raise ConfigError(f"service names must be distinct, got {[s.name for s in [local, *self.hosts]]}")
        self.splits = splits
        self.plugins = plugins or get_plugins()
        self.objective = self.plugins.objectives.get(self.config.cost.objective).fn
        self.plugins.link_factories.get(self.config.link)
        self.device = resolve_device(self.config.train.device)
        self.store = RunStore(run_dir) if run_dir is not None else None
        self.log = log
        self.on_path_done = on_path_done
        self.metadata = dict(metadata or {})
        head = local.card.boundaries[-1]
        if head.layout != "NC" or head.shape[0] != splits.num_classes:
            raise ConfigError(
                f"local service {local.name!r} outputs {head.shape}, but the data set {splits.name!r} has "
                f"{splits.num_classes} classes"
            )

    # -- setup --------------------------------------------------------------------------------
    def _prepare(self) -> None:
        for s in self.services.values():
            s.to(self.device)
        self.fingerprints = {n: s.fingerprint() for n, s in self.services.items()}
        self.data = {}
        self.caches: dict[str, FeatureCache] = {}
        for part in ("train", "val", "test"):
            x, y = tensors(getattr(self.splits, part))
            if tuple(x.shape[1:]) != self.local.input_spec.shape:
                raise ConfigError(f"{part} inputs have shape {tuple(x.shape[1:])}; local service "
                                  f"{self.local.name!r} expects {self.local.input_spec.shape}")
            self.data[part] = y
            self.caches[part] = FeatureCache(self.services, x.to(self.device))
        cfg = self.config
        self.block_us = {
            n: profile_blocks(s, batch_size=cfg.profile_batch, device=self.device, repeats=cfg.profile_repeats)
            for n, s in self.services.items()
        }
        self._link_us: dict[tuple[Any, ...], float] = {}

    def _original(self) -> Candidate:
        spec = PathSpec.parse(f"{self.local.name}[:]")
        path = Path(spec, self.services, plugins=self.plugins)
        cand = self._candidate(spec, path)
        cand.val_accuracy = accuracy(path, self.caches["val"], self.data["val"], device=str(self.device))
        cand.test_accuracy = accuracy(path, self.caches["test"], self.data["test"], device=str(self.device))
        self.l_a = cand.val_accuracy
        cand.cost = self._cost(cand, cand.val_accuracy)
        cand.status = "original"
        return cand

    # -- estimates ----------------------------------------------------------------------------
    def _candidate(self, spec: PathSpec, path: Path) -> Candidate:
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
        path = Path(spec, self.services, link=self.config.link, link_options=self.config.link_options,
                    plugins=self.plugins).to(self.device)
        return self._candidate(path.spec, path)

    # -- training steps -----------------------------------------------------------------------
    def _trainer(self, cand: Candidate) -> LinkTrainer:
        if cand.trainer is None:
            teacher = self.caches["train"].get(self.local.name, self.local.num_blocks) if self.config.train.distill else None
            cand.trainer = LinkTrainer(cand.path, self.config.train, self.caches["train"], self.data["train"], teacher)
        return cand.trainer

    def _ls_init(self, cand: Candidate) -> None:
        if self.config.train.ls_init:
            cand.ls_initialised = init_path_links(cand.path, self.caches["train"], self.config.train.ls_samples,
                                                  self.config.train.ls_ridge)

    def _val(self, cand: Candidate) -> float:
        cand.val_accuracy = accuracy(cand.path, self.caches["val"], self.data["val"], device=str(self.device))
        cand.cost = self._cost(cand, cand.val_accuracy)
        return cand.val_accuracy

    def _finish(self, cand: Candidate) -> None:
        """Full-budget training done: measure, save links, emit the row."""
        self._val(cand)
        cand.test_accuracy = accuracy(cand.path, self.caches["test"], self.data["test"], device=str(self.device))
        cand.status = "trained"
        if self.store is not None:
            manifest = {
                "spec": str(cand.spec), "paper_form": _paper(cand.spec), "link_factories": list(cand.path.link_factories),
                "link_sides": list(cand.path.link_sides), "link_options": self.config.link_options,
                "fingerprints": {n: self.fingerprints[n] for n in cand.path.services},
                "seed": path_seed(self.config.train.seed, str(cand.spec)),
                "metrics": {"val_accuracy": cand.val_accuracy, "test_accuracy": cand.test_accuracy,
                            "cost": cand.cost, "epochs": cand.epochs},
            }
            cand.links_file = str(self.store.save_links(str(cand.spec), cand.path.links, manifest))
        self._emit(cand)

    def _emit(self, cand: Candidate) -> None:
        row = self._row(cand)
        self.rows[str(cand.spec)] = row
        if self.store is not None:
            self.store.append_row(row)
        if cand.status == "trained":
            self.log(f"  trained {cand.spec}: val {cand.val_accuracy:.3f}, cost {cand.cost:.4f}")
        cand.trainer = None
        cand.path = None  # free the links and optimizer state
        if self.on_path_done is not None:
            self.on_path_done(cand)

    def _row(self, cand: Candidate) -> dict[str, Any]:
        m = cand.measures
        acc = cand.val_accuracy
        terms = self.config.cost.terms(replace(m, accuracy=acc), self.l_a) if acc is not None else {}
        try:
            ix = cand.spec.indices
            indices = {"lout": ix.lout, "hin": ix.hin, "hout": ix.hout, "lin": ix.lin}
        except Exception:
            indices = {"lout": None, "hin": None, "hout": None, "lin": None}
        st = cand.stats
        return {
            "spec": str(cand.spec), "kind": cand.spec.kind, **indices,
            "status": cand.status, "reason": cand.reason,
            "val_accuracy": cand.val_accuracy, "test_accuracy": cand.test_accuracy, "ls_accuracy": cand.ls_accuracy,
            "ls_initialised": cand.ls_initialised, "epochs": cand.epochs, "train_samples": cand.train_samples,
            "t_comm_us": m.t_comm_us, "t_local_us": m.t_local_us, "t_host_us": m.t_host_us, "latency_us": m.latency_us,
            "feasible": self.config.cost.feasible(m),
            "link_params": st["link_params"], "local_params": st["local_params"], "host_params": st["host_params"],
            "skipped_params": st["skipped_params"], "local_gflops": m.local_gflops, "host_gflops": m.host_gflops,
            **terms, "cost": cand.cost, "links_file": cand.links_file,
        }

    # -- entry points -------------------------------------------------------------------------
    def train_one(self, spec: PathSpec | str) -> dict[str, Any]:
        """Train a single path in full (least-squares init, then ``train.epochs``) and save it."""
        self.rows = {}
        self.resumed = set()
        self._prepare()
        original = self._original()
        self.original_row = self._row(original)
        parsed = PathSpec.parse(spec) if isinstance(spec, str) else spec
        cand = self._build(parsed)
        self._ls_init(cand)
        self._trainer(cand).train_epochs(self.config.train.epochs)
        self._finish(cand)
        for service in self.services.values():
            service.verify_frozen()
        return self.rows[str(cand.spec)]

    def run(self, specs: Sequence[PathSpec | str] | None = None) -> SearchResult:
        """Search the configured path space, or only ``specs`` when given (e.g. the paper's sweeps)."""
        t0 = time.perf_counter()
        cfg = self.config
        done: dict[str, dict[str, Any]] = {}
        if self.store is not None and self.store.check_resumable(cfg.hash()):
            done = {r["spec"]: r for r in self.store.rows()}
            self.log(f"resuming {self.store.root}: {len(done)} paths already final")
        self._prepare()
        if done and self.store is not None:
            self.store.check_fingerprints(self.fingerprints)
        self.rows: dict[str, dict[str, Any]] = dict(done)
        self.resumed = set(done)
        original = self._original()
        self.original_row = self._row(original)
        if self.store is not None:
            self.store.write_json("run.json", self._run_json(None, None, [], {}))
        if specs is None:
            space = PathSpace.between(self.local, self.hosts, **asdict(cfg.space))
            specs = [s for s in space]
        else:
            specs = [PathSpec.parse(s) if isinstance(s, str) else s for s in specs]
        if not specs:
            raise ConfigError("the path space is empty: allow skip or cross paths, or lower min_skipped")
        todo = [s for s in specs if str(s.resolve({n: v.num_blocks for n, v in self.services.items()})) not in done]
        self.log(f"{cfg.strategy} search over {len(specs)} paths ({len(todo)} to do); original val accuracy "
                 f"L_A = {self.l_a:.3f}, cost {original.cost:.4f}")
        if cfg.strategy == "exhaustive":
            self._exhaustive(todo)
        else:
            self._fast(todo, original.cost)  # type: ignore[arg-type]
        for service in self.services.values():
            service.verify_frozen()
        return self._result(specs, time.perf_counter() - t0)

    def _check_bound(self, cands: Sequence[Candidate]) -> None:
        """Eq. (2) with a bound no candidate (nor the original) can meet is a configuration error."""
        bound = self.config.cost.latency_bound_us
        if bound is None or not cands:
            return
        fastest = min(c.measures.latency_us for c in cands)
        if fastest > bound and self.original_row["latency_us"] > bound:
            raise ConfigError(
                f"latency bound L_T = {bound:.0f} us cannot be met: the fastest candidate path is estimated at "
                f"{fastest:.0f} us and the original model at {self.original_row['latency_us']:.0f} us"
            )

    def _progress(self, items: Sequence[Any], label: str) -> Any:
        if not self.config.train.progress:
            return items
        from rich.progress import track

        return track(items, description=label, transient=True)

    def _exhaustive(self, todo: Sequence[PathSpec]) -> None:
        cands = [self._build(spec) for spec in self._progress(todo, "exhaustive: estimating costs")]
        self._check_bound(cands)
        for cand in self._progress(cands, "exhaustive: training every path"):
            self._ls_init(cand)
            self._trainer(cand).train_epochs(self.config.train.epochs)
            self._finish(cand)

    def _fast(self, todo: Sequence[PathSpec], original_cost: float) -> None:
        cfg, fast = self.config, self.config.fast
        state = self.store.read_json("state.json") if self.store is not None else None
        if state and set(state["survivors"]) == {str(s) for s in todo}:
            # resume: rebuild the survivors exactly (deterministic per-path training) and go on
            alive = [self._build(s) for s in todo]
            for cand in alive:
                self._ls_init(cand)
                self._trainer(cand).train_epochs(state["epochs"][str(cand.spec)])
                self._val(cand)
            rung = state["rung"]
            self.log(f"  resumed {len(alive)} survivors at rung {rung}")
        else:
            alive = self._screen(todo, original_cost)
            rung = fast.first_rung_epochs
        while len(alive) > fast.final_keep and min(c.epochs for c in alive) + rung < cfg.train.epochs:
            for cand in self._progress(alive, f"fast: halving rung ({len(alive)} paths, {rung} epoch(s))"):
                self._trainer(cand).train_epochs(rung)
                self._val(cand)
            alive.sort(key=lambda c: c.cost)  # type: ignore[arg-type, return-value]
            keep = max(fast.final_keep, math.ceil(len(alive) / fast.eta))
            for cand in alive[keep:]:
                cand.status, cand.reason = "pruned", (
                    f"halving: val accuracy {cand.val_accuracy:.3f} after {cand.epochs} epoch(s) ranks below the top {keep}")
                self._emit(cand)
            alive = alive[:keep]
            rung *= fast.eta
            if self.store is not None:
                self.store.write_json("state.json", {"rung": rung, "survivors": [str(c.spec) for c in alive],
                                                     "epochs": {str(c.spec): c.epochs for c in alive}})
        for cand in self._progress(alive, "fast: full training of survivors"):
            trainer = self._trainer(cand)
            trainer.train_epochs(cfg.train.epochs - trainer.epochs_done)
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
        screener = Screener(self.caches["train"], self.caches["val"], self.data["val"],
                            samples=cfg.train.ls_samples, ridge=cfg.train.ls_ridge)
        for cand in self._progress(sorted(alive, key=lambda c: str(c.spec)), "fast: least-squares screening"):
            if cfg.train.ls_init:
                cand.ls_initialised, cand.ls_accuracy = screener.screen(cand.path)
                cand.val_accuracy, cand.cost = cand.ls_accuracy, self._cost(cand, cand.ls_accuracy)
            else:
                cand.ls_accuracy = self._val(cand)
        alive.sort(key=lambda c: c.cost)  # type: ignore[arg-type, return-value]
        for cand in alive[fast.screen_keep:]:
            cand.status, cand.reason = "pruned", (
                f"screen: least-squares val accuracy {cand.ls_accuracy:.3f} ranks below the top {fast.screen_keep}")
            self._emit(cand)
        return alive[: fast.screen_keep]

    # -- results ------------------------------------------------------------------------------
    def _result(self, specs: Sequence[PathSpec], seconds: float) -> SearchResult:
        rows = list(self.rows.values())
        trained = [r for r in rows if r["status"] == "trained"]
        feasible = [r for r in trained if r["feasible"]]
        selected = min(feasible, key=lambda r: r["cost"]) if feasible else None
        pareto = pareto_front(trained)
        orig_cost = self.original_row["cost"]
        if selected is None:
            decision = "discard: no trained path meets the latency bound; keep the original model"
        elif selected["cost"] < orig_cost:
            decision = f"keep {selected['spec']}: cost {selected['cost']:.4f} < original {orig_cost:.4f}"
        else:
            decision = f"discard {selected['spec']}: cost {selected['cost']:.4f} >= original {orig_cost:.4f}"
        totals = {
            "paths": len(specs),
            "trained": len(trained),
            "pruned": sum(1 for r in rows if r["status"] == "pruned"),
            "train_samples": sum(r["train_samples"] for r in rows),
            "train_samples_this_session": sum(r["train_samples"] for k, r in self.rows.items() if k not in self.resumed),
            "wall_seconds": round(seconds, 2),
        }
        if self.store is not None:
            self.store.write_json("run.json", self._run_json(selected, decision, pareto, totals))
            plot_pareto(rows, self.original_row, selected, self.store.root / "pareto.png")
        return SearchResult(rows, self.original_row, selected, pareto, decision, totals,
                            str(self.store.root) if self.store else None)

    def _run_json(self, selected: dict[str, Any] | None, decision: str | None, pareto: list[str],
                  totals: dict[str, Any]) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(), "config_hash": self.config.hash(),
            "services": {n: s.card.to_dict() for n, s in self.services.items()},
            "data": {"name": self.splits.name, **self.splits.sizes(), "num_classes": self.splits.num_classes},
            "original": self.original_row, "selected": selected, "decision": decision,
            "pareto": pareto, "totals": totals, "metadata": self.metadata,
        }


def _paper(spec: PathSpec) -> str | None:
    try:
        return spec.paper_form()
    except Exception:
        return None


def pareto_front(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Specs not dominated on (higher val accuracy, lower local GFLOPs, lower latency)."""

    def key(r: Mapping[str, Any]) -> tuple[float, float, float]:
        return (-r["val_accuracy"], r["local_gflops"], r["latency_us"])

    front = []
    for r in rows:
        kr = key(r)
        if not any(all(a <= b for a, b in zip(key(o), kr)) and key(o) != kr for o in rows):
            front.append(r["spec"])
    return front


def plot_pareto(rows: Sequence[Mapping[str, Any]], original: Mapping[str, Any], selected: Mapping[str, Any] | None,
                target: FsPath) -> None:
    """Accuracy vs local compute, coloured by latency; the front, the pick and the original marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [r for r in rows if r["status"] == "trained"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if trained:
        sc = ax.scatter([r["local_gflops"] for r in trained], [r["val_accuracy"] for r in trained],
                        c=[r["latency_us"] / 1e3 for r in trained], cmap="viridis", s=30, label="trained paths")
        fig.colorbar(sc, ax=ax, label="latency (ms)")
        front = sorted((r for r in trained if r["spec"] in pareto_front(trained)), key=lambda r: r["local_gflops"])
        ax.plot([r["local_gflops"] for r in front], [r["val_accuracy"] for r in front], "k--", lw=1, label="Pareto front")
    ax.scatter([original["local_gflops"]], [original["val_accuracy"]], marker="*", s=200, c="red", label="original model")
    if selected is not None:
        ax.scatter([selected["local_gflops"]], [selected["val_accuracy"]], marker="o", s=160, facecolors="none",
                   edgecolors="red", lw=2, label="selected")
    ax.set_xlabel("local compute (GFLOPs per sample)")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(target)
