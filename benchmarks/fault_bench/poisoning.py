"""Part 2, poisoning: a fixed probe sent to a host before and after the fuzz, and what the host
says it trained."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .harness import bearer, model_url


def probe(url: str, model: str, token: str, x: torch.Tensor) -> list[dict[str, Any]]:
    """The answers to ``x`` as one batch and to each of its samples alone (status, output)."""
    import httpx

    from codenn_adapters import oip

    out = []
    with httpx.Client(base_url=url, timeout=60, headers=bearer(token)) as client:
        for part in [x, *(x[i:i + 1] for i in range(len(x)))]:
            body, headers = oip.encode_request({"input": part})
            r = client.post(f"{model_url(model)}/infer", content=body, headers=headers)
            y = None
            if r.status_code == 200:
                _, tensors = oip.decode_response(r.content, r.headers.get(oip.HEADER_LENGTH))
                y = tensors["output"]
            out.append({"status": r.status_code, "output": y})
    return out


def compare_probes(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], *, exact: bool
                   ) -> dict[str, Any]:
    """Poisoned answers: not 200, non-finite, or (``exact``) not bit-identical to the answer before."""
    poisoned, worst = 0, 0.0
    for b, a in zip(before, after):
        ya, yb = a["output"], b["output"]
        bad = a["status"] != 200 or ya is None or not bool(torch.isfinite(ya).all())
        if not bad and exact:
            bad = yb is None or ya.shape != yb.shape or not torch.equal(ya, yb)
            if yb is not None and ya.shape == yb.shape:
                worst = max(worst, float((ya - yb).abs().max()))
        poisoned += bad
    return {"answers": len(after), "poisoned": poisoned, "max_abs_diff": worst if exact else None}


def train_state(url: str, model: str, token: str) -> dict[str, Any]:
    """The caller's split-training state on the host (``{"status": CODE}`` when refused)."""
    import httpx

    r = httpx.get(f"{url}{model_url(model)}/train/state", headers=bearer(token), timeout=30)
    return dict(r.json().get("parameters", {})) if r.status_code == 200 else {"status": r.status_code}


def steps_trained(url: str, model: str, token: str) -> int | None:
    """All providers' applied steps, from the model's public metadata."""
    import httpx

    r = httpx.get(f"{url}{model_url(model)}", headers=bearer(token), timeout=30)
    return r.json().get("parameters", {}).get("steps_trained") if r.status_code == 200 else None
