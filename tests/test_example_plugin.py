"""docs/examples/codenn-example-plugin installs, is found through its entry point, and works.

The package is built and installed with pip into a temporary ``--target`` directory (offline: no
dependencies, no build isolation), and every check runs in a subprocess with that directory on
PYTHONPATH, so this process's plugin set and ``sys.path`` are left alone and the example is found
exactly as a user's ``pip install`` would find it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "docs" / "examples" / "codenn-example-plugin"
TIMEOUT = 120  # per subprocess; the whole module normally takes ~30 s on 2 CPU cores


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args[:4])} ... exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, Path]:
    """(env with the installed example on PYTHONPATH, a scratch cwd, the copied source tree).

    pip builds in the source tree (build/, *.egg-info), so it builds a copy, not docs/examples.
    """
    root = tmp_path_factory.mktemp("example_plugin")
    src = root / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".pytest_cache"))
    site = root / "site"
    env = {k: v for k, v in os.environ.items() if k not in {"CODENN_LOAD_PLUGINS", "CODENN_DISABLE_PLUGINS"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
          "--no-cache-dir", "--target", str(site), str(src)], env, root)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    work = root / "work"
    work.mkdir()
    return env, work, src


def test_codenn_plugins_lists_the_example_with_its_distribution(installed) -> None:
    env, work, _ = installed
    out = _run([sys.executable, "-m", "codenn", "plugins", "--json"], env, work).stdout
    infos = {p["name"]: p for p in json.loads(out)}
    assert "example" in infos, f"'example' missing from codenn plugins: {sorted(infos)}"
    example = infos["example"]
    assert example["distribution"] == "codenn-example-plugin"
    assert example["version"] == "0.1.0"
    assert example["hooks"] == ["codenn_register_link_factories", "codenn_register_splitters"]
    assert example["registered"] == {"splitters": ["tiny_convnet"], "link_factories": ["depthwise_separable"]}
    assert infos["links"]["distribution"] == "codenn"  # built-ins still load beside it


SNIPPET = textwrap.dedent(
    """
    import json
    from importlib.metadata import entry_points

    import torch

    import codenn
    from codenn import ComposedPath

    # Found through the entry point, never imported by name.
    (ep,) = entry_points(group="codenn", name="example")
    plugin = ep.load()
    plugins = codenn.get_plugins()

    torch.manual_seed(0)
    service = codenn.Service("tiny", plugin.TinyConvNet(num_classes=10), input_shape=(3, 32, 32))
    before = service.fingerprint()
    path = ComposedPath("tiny[:1] > tiny[2:]", [service], link="depthwise_separable")
    path.train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(path.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(path(x), y)
        loss.backward()
        opt.step()
    path.check_frozen()
    print(json.dumps({
        "splitter": service.splitter_name,
        "splitter_owner": plugins.splitters.owner(service.splitter_name),
        "link_owner": plugins.link_factories.owner("depthwise_separable"),
        "link_type": type(path.links[0]).__name__,
        "blocks": service.num_blocks,
        "link_grads": all(p.grad is not None for p in path.trainable_parameters()),
        "frozen_grads": any(p.grad is not None or p.requires_grad for p in service.parameters()),
        "fingerprint_unchanged": service.fingerprint() == before,
        "out_shape": list(path(x).shape),
        "loss_finite": bool(torch.isfinite(loss)),
    }))
    """
)


def test_service_and_skip_path_with_the_example_link(installed) -> None:
    env, work, _ = installed
    out = _run([sys.executable, "-c", SNIPPET], env, work).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {
        "splitter": "tiny_convnet",
        "splitter_owner": "example",
        "link_owner": "example",
        "link_type": "DepthwiseSeparableLink",
        "blocks": 4,
        "link_grads": True,
        "frozen_grads": False,
        "fingerprint_unchanged": True,
        "out_shape": [4, 10],
        "loss_finite": True,
    }


def test_the_example_packages_own_tests_pass_installed(installed) -> None:
    env, work, src = installed
    # cwd is not the source tree, so the tests import the installed package, not the copy. Only
    # the example loads from entry points (the built-ins, timm's import included, are not needed).
    env = {**env, "CODENN_LOAD_PLUGINS": "example"}
    proc = _run([sys.executable, "-m", "pytest", str(src / "tests"), "-q", "-p", "no:cacheprovider",
                 "-rs"], env, work)
    assert "passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout
