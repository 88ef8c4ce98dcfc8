from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from codenn.contracts.plugins import Plugins, create_plugins


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


SMALL_SEARCH_TOML = """
[local]
name = "mnv3"
model = "mobilenet_v3_small"
task = "digits"
size = 32
epochs = 1
lr = 2e-3

[[hosts]]
name = "host"
model = "mobilenet_v3_small"
task = "shapes"
epochs = 1
lr = 2e-3

[search]
strategy = "fast"

[train]
epochs = 2
ls_samples = 128

[space]
hin = 1
hout = 2

[fast]
screen_keep = 3
final_keep = 1
"""


@pytest.fixture(scope="session")
def small_search_toml() -> str:
    """A search configuration small enough for tests: MobileNetV3-small base models trained one
    epoch at 32x32, a path space cut to hin=1, hout=2, two epochs per path."""
    return SMALL_SEARCH_TOML


@pytest.fixture
def without_ray(monkeypatch) -> None:
    """Every ``import ray`` fails from here on in the test, as on a machine without the extra."""
    import builtins

    real = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
