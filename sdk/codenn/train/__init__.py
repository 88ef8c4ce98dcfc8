"""Training links on frozen blocks, and what it needs: cached prefix features, least-squares
initialisation, screening, data sets (real, generated, on disk), and the base models a run's
services are built from (trained once, cached; :func:`load_service` rebuilds a service).

Names are imported on first use (:mod:`codenn.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from codenn.lazy import lazy_exports

if TYPE_CHECKING:
    from codenn.train.base_models import base_model, cache_dir, cached_base_model, cached_files, train_base_model
    from codenn.train.data import Splits, split_dataset, tensors
    from codenn.train.features import FeatureCache
    from codenn.train.lstsq import init_path_links, least_squares_init
    from codenn.train.scenario import Scenario, build_scenario, load_service, run_services, scenario_from_config
    from codenn.train.screener import Screener
    from codenn.train.tasks import TASKS, task_splits
    from codenn.train.trainer import LinkTrainer, accuracy, path_seed

_EXPORTS = {
    "base_model": "codenn.train.base_models",
    "cache_dir": "codenn.train.base_models",
    "cached_base_model": "codenn.train.base_models",
    "cached_files": "codenn.train.base_models",
    "train_base_model": "codenn.train.base_models",
    "Splits": "codenn.train.data",
    "split_dataset": "codenn.train.data",
    "tensors": "codenn.train.data",
    "FeatureCache": "codenn.train.features",
    "init_path_links": "codenn.train.lstsq",
    "least_squares_init": "codenn.train.lstsq",
    "Scenario": "codenn.train.scenario",
    "build_scenario": "codenn.train.scenario",
    "load_service": "codenn.train.scenario",
    "run_services": "codenn.train.scenario",
    "scenario_from_config": "codenn.train.scenario",
    "Screener": "codenn.train.screener",
    "TASKS": "codenn.train.tasks",
    "task_splits": "codenn.train.tasks",
    "LinkTrainer": "codenn.train.trainer",
    "accuracy": "codenn.train.trainer",
    "path_seed": "codenn.train.trainer",
}
__all__ = [
    "FeatureCache", "LinkTrainer", "Scenario", "Screener", "Splits", "TASKS", "accuracy", "base_model",
    "build_scenario", "cache_dir", "cached_base_model", "cached_files", "init_path_links", "least_squares_init",
    "load_service", "path_seed", "run_services", "scenario_from_config", "split_dataset", "task_splits", "tensors",
    "train_base_model",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
