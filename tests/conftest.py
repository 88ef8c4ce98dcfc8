from __future__ import annotations

import pytest
import torch

from codenn.plugins import Plugins, create_plugins


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def plugins() -> Plugins:
    """A fresh plugin set loaded from entry points (built-ins and anything installed)."""
    return create_plugins()


@pytest.fixture
def bare_plugins() -> Plugins:
    """A plugin manager with the hookspecs only: register throwaway plugins on it."""
    return create_plugins(load_entry_points=False)
