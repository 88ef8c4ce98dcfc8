"""The embedded default scenario: two providers, their cards, the path space, a skip and a cross path.

Runs offline on random-initialised torchvision models at 64x64 so it needs no download.
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

from codenn.paths import Path
from codenn.pathspace import PathSpace
from codenn.service import Service


def run_demo(console: Console | None = None) -> dict[str, object]:
    console = console or Console()
    torch.manual_seed(0)
    local = Service.from_name("alexnet", num_classes=10, input_shape=(3, 64, 64))
    host = Service.from_name("mobilenet_v2", num_classes=20, input_shape=(3, 64, 64))
    for s in (local, host):
        table = Table(title=f"service card: {s.name} ({s.card.family}, {s.num_blocks} blocks)")
        for col in ("block", "name", "params", "MFLOPs", "output"):
            table.add_column(col)
        for c, b in zip(s.card.blocks, s.boundaries):
            table.add_row(str(c.index), c.name, f"{c.params:,}", f"{c.flops / 1e6:.1f}", f"{b.layout} {b.shape}")
        console.print(table)
    space = PathSpace.between(local, [host])
    console.print(f"path space alexnet -> mobilenet_v2: {space.counts()}")
    x = torch.randn(8, 3, 64, 64)
    results: dict[str, object] = {}
    table = Table(title="example paths (one forward + backward on a batch of 8)")
    for col in ("path", "paper form", "link params", "local params", "skipped params", "host params", "frozen"):
        table.add_column(col)
    for text in ("alexnet[:2] > alexnet[4:]", "alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]"):
        path = Path(text, [local, host])
        path.train()
        path(x).logsumexp(dim=1).mean().backward()
        path.check_frozen()
        st = path.stats()
        results[text] = st.to_dict()
        table.add_row(str(path.spec), path.spec.paper_form(), f"{st.link_params:,}", f"{st.local_params:,}",
                      f"{st.skipped_params:,}", f"{st.host_params:,}", "unchanged")
    console.print(table)
    return results
