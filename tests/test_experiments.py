"""The paper's experiment scripts (benchmarks/paper) run end to end on a tiny configuration.

Untrained base models (0 epochs), 32 samples per split, one link-training epoch and one or two
paths per sweep: this checks the scripts' plumbing and their JSON, not the science, so that they
cannot rot silently between full runs (``make experiments``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

PAPER_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "paper"
sys.path.insert(0, str(PAPER_DIR))

import exp1_alexnet_cross as exp1  # noqa: E402
import exp2_alexnet_skip as exp2  # noqa: E402
import exp3_alexnet_mobilenet as exp3  # noqa: E402
import exp4_path_selection as exp4  # noqa: E402
import paper_common as pc  # noqa: E402
import report  # noqa: E402

from codenn.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> pc.Options:
    root = tmp_path_factory.mktemp("paper")
    return pc.Options(limit=32, base_epochs=0, link_epochs=1, batch_size=16, cache=str(root / "cache"),
                      out_dir=str(root / "results"), fig_dir=str(root / "figures"), export=False, threads=2)


def _is_acc(x: Any) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def _check_common(res: dict[str, Any], opts: pc.Options, name: str) -> None:
    out = Path(opts.out_dir) / f"{name}.json"
    assert out.is_file() and json.loads(out.read_text())["experiment"] == name
    assert Path(opts.fig_dir, f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["frozen_verified"] is True and res["wall_seconds"] >= 0
    env = res["environment"]
    assert env["torch"] and env["threads"] >= 1 and env["options"]["limit"] == 32
    assert _is_acc(res["original"]["test_accuracy"])


@pytest.mark.slow  # about 7 minutes on the shared 2-core development machine (4 AlexNets are built and saved)
def test_tiny_experiments_end_to_end(tiny: pc.Options, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODENN_CACHE", tiny.cache or "")
    say: list[str] = []
    r1 = exp1.run(tiny, houts=(2,), link_hout=2, log=say.append)
    _check_common(r1, tiny, exp1.NAME)
    assert {r["hout"] for r in r1["cross"]} == {2} and len(r1["cross"]) == 3  # two trained hosts + random
    assert all(_is_acc(r["test_accuracy"]) and r["link_params"] > 0 for r in [*r1["cross"], r1["skip"]])
    assert r1["skip"]["skipped_params"] == r1["cross"][0]["skipped_params"] > 0
    assert r1["hosts"] == ["alexnet_letters", "alexnet_shapes", "alexnet_random"]
    assert r1["base_models"]["alexnet"]["architecture"] == "alexnet_cifar"
    ri = r1["random_init"]  # least squares vs random link initialisation
    assert not ri["skip"]["ls_init"] and [r["hout"] for r in ri["cross"]] == [2] and r1["skip"]["ls_init"]
    assert _is_acc(r1["summary"]["random_init"]["skip_0_5"]) and r1["summary"]["random_init"]["paths"] == 2
    assert isinstance(r1["summary"]["goals"]["trained_beats_random_met"], bool)
    assert set(r1["summary"]["link_sizes"]) >= {"normal", "reduced25", "reduced5", "just_links"}
    ls = r1["summary"]["link_sizes"]
    assert ls["reduced5"]["link_params"] < ls["reduced25"]["link_params"] < ls["normal"]["link_params"]

    r2 = exp2.run(tiny, louts=(4,), timing_repeats=2, log=say.append)
    _check_common(r2, tiny, exp2.NAME)
    assert r2["pairs"] == [[4, 6]]
    kinds = {r["link_kind"] for r in r2["rows"]}
    assert kinds == {"normal", "reduced25", "reduced5", "normal_random_init"}
    assert all(_is_acc(r["test_accuracy"]) for r in r2["rows"])
    assert r2["summary"]["reduced25_vs_normal"]["param_ratio"] > 1
    assert all(v > 0 for v in r2["latency_ms"].values())

    r3 = exp3.run(tiny, houts=(2, 3), log=say.append)
    _check_common(r3, tiny, exp3.NAME)
    assert sorted(r3["summary"]["by_hout"]) == [2, 3] and isinstance(r3["summary"]["monotonic"], bool)
    assert r3["host"] == "mobilenet_letters" and r3["base_models"]["mobilenet_letters"]["task"] == "letters"
    assert 0 < r3["summary"]["best"]["local_gflops_reduction"] < 1

    r4 = exp4.run(tiny, houts=(2, 3), profile_repeats=2, log=say.append)
    _check_common(r4, tiny, exp4.NAME)
    assert {s for s in r4["strategies"]} == {"exhaustive", "fast"}
    assert len(r4["rows"]) == 3 and all(math.isfinite(r["cost"]) for r in r4["rows"])
    assert r4["summary"]["selected"] in {r["spec"] for r in r4["rows"]}
    assert r4["export"]["skipped"] is True

    text = report.render(Path(tiny.out_dir))
    for title in ("Experiment 1", "Experiment 2", "Experiment 3", "Experiment 4"):
        assert f"## {title}" in text
    assert "Not run yet" not in text
    goals = text.split("## Summary")[1].split("## Cost")[0]
    assert goals.count("| **met** |") + goals.count("| **not met** |") == 5  # issue 13's five goals, each decided
    assert "random-init links" in text and "normal_random_init" in text  # LS vs random init, Exps 1 and 2


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="16"):
        pc.Options(size=15)
    assert pc.Options().size == 32 and pc.Options(size=16).size == 16
    with pytest.raises(ConfigError, match="limit"):
        pc.Options(limit=2)
    with pytest.raises(ConfigError, match="unknown host"):
        pc.make_lab(pc.Options(limit=8, base_epochs=0), ("nope",))


def test_recovered_share() -> None:
    assert pc.recovered(0.8, 0.6, 1.0) == pytest.approx(0.5)
    assert pc.recovered(0.8, 0.9, 0.9) is None
    assert pc.recovered(0.8, 0.95, 0.9) is None  # the baseline beats the original: no drop to recover


def test_cache_folder_does_not_nest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODENN_CACHE", str(tmp_path))  # use_cache() sets it; restored after the test
    monkeypatch.setattr(pc, "_USER_CACHE", tmp_path)
    first = pc.use_cache(pc.Options())
    assert pc.use_cache(pc.Options()) == first == tmp_path / "experiments"


def test_recipes_follow_the_default_scenario() -> None:
    from dataclasses import replace

    from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL

    assert pc.local_spec(pc.Options()) == DEFAULT_LOCAL
    assert pc.host_spec("mobilenet_letters", pc.Options()) == DEFAULT_HOST
    assert pc.host_spec("alexnet_letters", pc.Options()) == replace(DEFAULT_LOCAL, task="letters", epochs=40,
                                                                      lr_drops=0)
    quick = pc.host_spec("alexnet_shapes", pc.Options(base_epochs=2, size=48, seed=3))
    assert (quick.task, quick.epochs, quick.patience, quick.lr_drops, quick.size, quick.seed) == ("shapes", 2, 0, 0, 48, 3)
    assert pc.local_spec(pc.Options(base_epochs=0)).patience == 0  # untrained: load_base builds it, no cache
