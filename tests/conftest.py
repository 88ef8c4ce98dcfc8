from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from codenn.plugins import Plugins, create_plugins


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models and exports run fastest on one torch thread: with two on a busy 2-core
    machine, OpenMP threads spin and forwards take many times longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def plugins() -> Plugins:
    """A fresh plugin set loaded from entry points (built-ins and anything installed)."""
    return create_plugins()


@pytest.fixture
def bare_plugins() -> Plugins:
    """A plugin manager with the hookspecs only: register throwaway plugins on it."""
    return create_plugins(load_entry_points=False)
