"""The search on tiny real models: caches, least squares, pruning, cost model, resumption, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from codenn import ConfigError, UnknownNameError
from codenn.config.cost import CostModel
from codenn.config.search import FastConfig, SearchConfig, SpaceConfig
from codenn.config.train import TrainConfig
from codenn.model.service import Service
from codenn.paths.composed import ComposedPath
from codenn.paths.cost import PathMeasures, accuracy_throughput, paper_cost
from codenn.search.strategies import Search
from codenn.train.data import split_dataset, tensors
from codenn.train.features import FeatureCache
from codenn.train.lstsq import init_path_links
from codenn.train.trainer import accuracy
from tiny import TinyCNN, fit, tiny_scenario


@pytest.fixture(scope="module")
def scenario():
    return tiny_scenario()


def config(**kw) -> SearchConfig:
    train = kw.pop("train", TrainConfig(epochs=2, progress=False))
    return SearchConfig(train=train, **kw)


def test_feature_cache_equals_recomputation(scenario) -> None:
    local, host, splits, _ = scenario
    x, _ = tensors(splits.val)
    cache = FeatureCache({"local": local, "host": host}, x)
    a = cache.get("local", 2)
    b = cache.get("local", 4)  # starts from the cached block-2 output
    with torch.no_grad():
        torch.testing.assert_close(a, local.run(x, 0, 2), rtol=0, atol=0)
        torch.testing.assert_close(b, local.run(x, 0, 4), rtol=0, atol=0)
        torch.testing.assert_close(cache.get("host", 3), host.run(x, 0, 3), rtol=0, atol=0)
    assert cache.forward_samples == 3 * len(x)  # local[0:2], local[2:4], host[0:3]; nothing twice
    cache.get("local", 2)
    assert cache.forward_samples == 3 * len(x)


@pytest.mark.parametrize("spec", ["local[:2] > local[4:]", "local[:1] > host[1:3] > local[3:]"])
def test_least_squares_init_beats_random_init(scenario, spec: str) -> None:
    local, host, splits, plugins = scenario
    services = {"local": local, "host": host}
    xt, yt = tensors(splits.train)
    xv, yv = tensors(splits.val)
    train, val = FeatureCache(services, xt), FeatureCache(services, xv)
    torch.manual_seed(0)
    random_path = ComposedPath(spec, services, link="conv1x1", plugins=plugins)
    ls_path = ComposedPath(spec, services, link="conv1x1", plugins=plugins)
    ls_path.load_state_dict(random_path.state_dict())
    assert init_path_links(ls_path, train, samples=256, ridge=1e-3) == [True] * len(ls_path.links)
    random_acc, ls_acc = accuracy(random_path, val, yv), accuracy(ls_path, val, yv)
    assert ls_acc > random_acc + 0.1, (random_acc, ls_acc)


def test_cost_model_terms() -> None:
    m = PathMeasures("p", accuracy=0.8, t_comm_us=100.0, t_local_us=1000.0, t_host_us=500.0,
                     local_gflops=0.5, host_gflops=0.1, local_mparams=2.0, host_mparams=0.3)
    model = CostModel(a=40, b=1e-3, c_l=1e-6, c_h=2e-5, d_l=10, d_h=10)
    terms = model.terms(m, original_accuracy=0.85)
    assert terms["accuracy_term"] == pytest.approx(math.exp(40 * 0.05))
    assert terms["comm_term"] == pytest.approx(0.1)
    assert terms["local_time_term"] == pytest.approx(1e-3)
    assert terms["host_time_term"] == pytest.approx(1e-2)
    assert terms["local_compute_term"] == pytest.approx(5.0)
    assert terms["host_compute_term"] == pytest.approx(1.0)
    assert paper_cost(m, 0.85, model) == pytest.approx(sum(terms.values()))
    params = CostModel(compute_unit="mparams").terms(m, 0.85)
    assert params["local_compute_term"] == pytest.approx(20.0) and params["host_compute_term"] == pytest.approx(3.0)
    assert CostModel(latency_bound_us=1600).feasible(m) and not CostModel(latency_bound_us=1599).feasible(m)
    assert accuracy_throughput(m, 0.85, model) == pytest.approx(-0.8 * 1e6 / 1600)
    for bad in ({"a": -1}, {"c_h": float("nan")}, {"latency_bound_us": 0}, {"compute_unit": "watts"}):
        with pytest.raises(ConfigError):
            CostModel(**bad)


def test_fast_pruning_never_drops_the_exhaustive_optimum(scenario, tmp_path) -> None:
    local, host, splits, plugins = scenario
    space = SpaceConfig(hin=1, hout=2)
    ex = Search(local, [host], splits, config(strategy="exhaustive", space=space), plugins=plugins, log=lambda s: None).run()
    fast = Search(local, [host], splits, config(strategy="fast", space=space, fast=FastConfig(screen_keep=4)),
                  plugins=plugins, log=lambda s: None).run()
    assert ex.totals["trained"] == ex.totals["paths"] == len(ex.rows)
    best = ex.selected
    assert best is not None
    row = next(r for r in fast.rows if r.spec == best.spec)
    assert "lower bound" not in row.reason and "latency" not in row.reason
    assert fast.totals["train_samples"] < ex.totals["train_samples"] / 2
    assert {r.spec for r in fast.rows} == {r.spec for r in ex.rows}
    for r in ex.rows:  # each row carries every term of eq. (1)
        assert r.cost == pytest.approx(sum(getattr(r, k) for k in ("accuracy_term", "comm_term", "local_time_term",
                                                                   "host_time_term", "local_compute_term",
                                                                   "host_compute_term")))


def test_search_writes_run_directory_and_keeps_services_frozen(scenario, tmp_path) -> None:
    local, host, splits, plugins = scenario
    before = (local.fingerprint(), host.fingerprint())
    cfg = config(strategy="fast", space=SpaceConfig(hin=1), fast=FastConfig(screen_keep=3, final_keep=1))
    result = Search(local, [host], splits, cfg, plugins=plugins, run_dir=tmp_path / "run", log=lambda s: None).run()
    assert (local.fingerprint(), host.fingerprint()) == before
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == result.totals["paths"]
    assert {r["status"] for r in rows} == {"trained", "pruned"}
    assert all(r["reason"] for r in rows if r["status"] == "pruned")
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["selected"]["spec"] == result.selected.spec and run["decision"] == result.decision
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 1000
    assert result.pareto and set(result.pareto) <= {r["spec"] for r in rows if r["status"] == "trained"}
    trained = [r for r in rows if r["status"] == "trained"]
    manifest = json.loads(open(trained[0]["links_file"].replace(".safetensors", ".json")).read())
    assert manifest["fingerprints"]["local"] == before[0]
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_resumed_search_matches_an_uninterrupted_one(scenario, tmp_path) -> None:
    local, host, splits, plugins = scenario
    cfg = config(strategy="exhaustive", space=SpaceConfig(cross=False))
    full = Search(local, [host], splits, cfg, plugins=plugins, log=lambda s: None).run()

    class Stop(Exception):
        pass

    seen = []

    def interrupt(cand) -> None:
        seen.append(cand)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        Search(local, [host], splits, cfg, plugins=plugins, run_dir=tmp_path, on_path_done=interrupt,
               log=lambda s: None).run()
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3
    logs: list[str] = []
    resumed = Search(local, [host], splits, cfg, plugins=plugins, run_dir=tmp_path, log=logs.append).run()
    assert any("3 paths already final" in line for line in logs)
    assert resumed.totals["train_samples"] == full.totals["train_samples"]
    assert resumed.totals["train_samples_this_session"] == full.totals["train_samples"] - 3 * 2 * len(splits.train)
    acc = {r.spec: r.val_accuracy for r in full.rows}
    assert {r.spec: r.val_accuracy for r in resumed.rows} == acc
    other = config(strategy="exhaustive", space=SpaceConfig(cross=False), link="conv3x3")
    with pytest.raises(ConfigError, match="different configuration"):
        Search(local, [host], splits, other, plugins=plugins, run_dir=tmp_path, log=lambda s: None).run()


def test_a_run_trained_on_other_weights_is_not_resumed(scenario, tmp_path) -> None:
    local, host, splits, plugins = scenario
    cfg = config(strategy="exhaustive", space=SpaceConfig(cross=False))
    Search(local, [host], splits, cfg, plugins=plugins, run_dir=tmp_path, log=lambda s: None).run()
    x, y = tensors(splits.train)
    retrained = Service("local", fit(TinyCNN(splits.num_classes), x, y, seed=3), input_shape=local.input_spec.shape,
                        plugins=plugins)
    assert retrained.fingerprint() != local.fingerprint()
    with pytest.raises(ConfigError, match="other weights for service 'local'"):
        Search(retrained, [host], splits, cfg, plugins=plugins, run_dir=tmp_path, log=lambda s: None).run()


def test_bad_configs_are_clear_errors(scenario) -> None:
    local, host, splits, plugins = scenario
    with pytest.raises(ConfigError, match="cannot be met"):
        Search(local, [host], splits, config(cost=CostModel(latency_bound_us=1e-3)), plugins=plugins,
               log=lambda s: None).run()
    with pytest.raises(UnknownNameError, match="objective 'fastest' not found"):
        Search(local, [host], splits, config(cost=CostModel(objective="fastest")), plugins=plugins)
    with pytest.raises(UnknownNameError, match="link factory 'wormhole' not found"):
        Search(local, [host], splits, config(link="wormhole"), plugins=plugins)
    with pytest.raises(ConfigError, match="unknown search strategy"):
        SearchConfig(strategy="genetic")
    with pytest.raises(ConfigError, match="is empty"):
        split_dataset(TensorDataset(torch.empty(0, 3, 16, 16), torch.empty(0, dtype=torch.long)), 10)
    with pytest.raises(ConfigError, match="split is empty"):
        split_dataset(TensorDataset(torch.randn(2, 3, 16, 16), torch.tensor([0, 1])), 2)
    with pytest.raises(ConfigError, match="out of range"):
        TrainConfig(epochs=0)
    wrong = split_dataset(TensorDataset(torch.randn(30, 3, 16, 16), torch.randint(0, 3, (30,))), 3)
    with pytest.raises(ConfigError, match="3 classes"):
        Search(local, [host], wrong, config(), plugins=plugins)


def test_screener_shares_work_and_matches_per_path_fits(scenario) -> None:
    from codenn.paths.space import PathSpace
    from codenn.train.screener import Screener

    local, host, splits, plugins = scenario
    services = {"local": local, "host": host}
    xt, _ = tensors(splits.train)
    xv, yv = tensors(splits.val)
    train, val = FeatureCache(services, xt), FeatureCache(services, xv)
    screener = Screener(train, val, yv)
    specs = [s for s in PathSpace.between(local, [host], hin=1) if s.segments[0].stop == 1][:8]
    for spec in specs:
        alone = ComposedPath(spec, services, link="conv1x1", plugins=plugins)
        shared = ComposedPath(spec, services, link="conv1x1", plugins=plugins)
        flags = init_path_links(alone, train, samples=256, ridge=1e-3)
        assert screener.screen(shared) == (flags, accuracy(alone, val, yv))
        for p, q in zip(alone.links.parameters(), shared.links.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    # cross paths with lout=0, hin=1 share the entry link's fit: fewer fits than links
    assert len(screener._fits) < sum(len(ComposedPath(s, services, plugins=plugins).links) for s in specs)


def test_image_folder_splits(tmp_path) -> None:
    from PIL import Image

    from codenn.train.data import image_folder
    from codenn.train.tasks import task_splits

    rng = torch.Generator().manual_seed(0)
    for label in ("cats", "dogs"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(10):
            pixels = (torch.rand(20, 24, 3, generator=rng) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "imgs" / label / f"{i}.png")
    splits = image_folder(tmp_path / "imgs", size=16)
    assert splits.num_classes == 2 and splits.sizes() == {"train": 12, "val": 4, "test": 4}
    x, y = tensors(splits.train)
    assert x.shape == (12, 3, 16, 16) and set(y.tolist()) <= {0, 1}
    again = task_splits(f"imagefolder:{tmp_path / 'imgs'}", size=16)
    assert torch.equal(tensors(again.test)[0], tensors(splits.test)[0])  # deterministic split
    with pytest.raises(ConfigError, match="does not exist"):
        image_folder(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="unknown task 'imagenet'"):
        task_splits("imagenet")
