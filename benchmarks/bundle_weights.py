"""Train the base weights codenn ships in ``sdk/codenn/bundled/`` (the default host's), within the
size budget issue 13 allows, so that a first ``make demo`` does not spend six minutes training
the host on two cores. The training code is the one a cache miss runs
(:func:`codenn.train.scenario.train_base_model`); only where the files go differs.

    python benchmarks/bundle_weights.py [--out sdk/codenn/bundled] [--budget-mb 10]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from codenn.config.base_model import DEFAULT_HOST, BaseModelSpec
from codenn.errors import ConfigError
from codenn.train.base_models import cached_files, train_base_model

BUNDLED = (DEFAULT_HOST,)
"""What codenn ships: the default host (9.2 MB). The default local model (13 MB) is trained on
first use: both would not fit in 10 MB."""


def bundle(specs: Sequence[BaseModelSpec], out: Path, *, budget_mb: float = 10.0,
           log: Callable[[str], None] = print) -> list[Path]:
    """Train every spec into ``out`` under the names the cache uses; a bundle over budget is
    refused and its files removed."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for spec in specs:
        weights, meta = cached_files(spec)
        target, target_meta = out / weights.name, out / meta.name
        log(f"training {spec.model} on {spec.task} into {target}")
        train_base_model(spec, target, target_meta, log=log)
        written += [target, target_meta]
    size = sum(p.stat().st_size for p in written) / 2**20
    if size > budget_mb:
        for p in written:
            p.unlink()
        raise ConfigError(f"the bundle would hold {size:.1f} MiB, over the budget of {budget_mb} MiB; nothing was kept")
    log(f"bundle: {size:.1f} MiB in {out}")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "sdk" / "codenn" / "bundled"))
    parser.add_argument("--budget-mb", type=float, default=10.0)
    args = parser.parse_args(argv)
    bundle(BUNDLED, Path(args.out), budget_mb=args.budget_mb)


if __name__ == "__main__":
    main()
