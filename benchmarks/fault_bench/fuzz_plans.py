"""Part 1, the fuzz: request *plans* (small dicts) drawn by hypothesis; :mod:`.fuzz_build` turns
each into bytes."""

from __future__ import annotations

from typing import Any

ENDPOINTS = ("pair",) * 4 + ("infer",) * 5 + ("forward",) * 2 + ("backward", "state", "metadata", "ready", "method")
MUTATIONS: dict[str, tuple[str, ...]] = {
    "who": ("reader", "nobody", "bad-token", "no-token", "basic-scheme", "bare-bearer"),
    "model": ("unknown", "encoded-slash", "long-20k", "unicode"),
    "shape": ("dim+1", "dim-1", "extra-dim", "missing-dim", "batch-0", "batch-large", "negative", "digits-5000",
              "2**70", "float-dim", "string-dim", "nine-dims", "scalar"),
    "datatype": ("FP16", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "BOOL", "FP8", "BYTES", "fp32"),
    "encoding": ("json", "json-nested", "json-strings", "json-null", "json-bool", "json-ragged"),
    "size": ("minus-1", "plus-1", "2**70", "negative", "string", "missing", "zero", "float", "digits-5000",
             "both-data-and-size"),
    "header_length": ("missing", "zero", "negative", "plus-1", "minus-1", "beyond-body", "text", "digits-5000",
                      "plus-sign", "superscript", "underscore"),
    "tail": ("truncate", "extra-bytes", "oversize"),
    "json": ("not-json", "invalid-utf8", "deep-nesting", "no-inputs", "empty-inputs", "two-tensors",
             "duplicate-name", "wrong-name", "inputs-object", "parameters-list", "id-surrogate", "id-number",
             "outputs-garbage", "top-level-list"),
    "step": ("zero", "max-int64", "2**63", "minus-1", "string", "float", "bool", "missing", "digits-5000", "null"),
}
TENSOR_FIELDS = ("shape", "datatype", "encoding", "size", "header_length", "tail", "json")
VALUES = ("normal",) * 6 + ("nan", "inf", "-inf", "mixed-non-finite", "huge-1e38", "huge-neg", "zeros", "denormal")
NON_FINITE = ("nan", "inf", "-inf", "mixed-non-finite")
GRADS = ("normal",) * 4 + NON_FINITE + ("huge-1e38", "zeros", "wrong-batch", "wrong-dtype")
REPEATS = ("once",) * 6 + ("same-twice", "different-twice")


def plan_strategy(poison_only: bool) -> Any:
    """A hypothesis strategy of request plans (small dicts: drawing bytes is left to :func:`.fuzz_build.build`)."""
    from hypothesis import strategies as st

    @st.composite
    def plans(draw: Any) -> dict[str, Any]:
        n = draw(st.sampled_from((0, 0, 0, 0, 1, 1, 1, 2, 3)))
        fields = draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=n, max_size=n, unique=True))
        plan: dict[str, Any] = {k: draw(st.sampled_from(MUTATIONS[k])) if k in fields else "ok" for k in sorted(MUTATIONS)}
        plan.update(
            endpoint=draw(st.sampled_from(ENDPOINTS)),
            seed=draw(st.integers(0, 2**31 - 1)),
            batch=draw(st.sampled_from((1, 1, 1, 2, 3, 4, 8, 16))),
            large=draw(st.sampled_from((64, 256, 2048))),
            values=draw(st.sampled_from(VALUES)),
            collide=draw(st.sampled_from((False,) * 9 + (True,))),
            step_id=draw(st.integers(0, 20)),
            binary_output=draw(st.booleans()),
            id=draw(st.one_of(st.none(), st.text(max_size=16))),
            grad=draw(st.sampled_from(NON_FINITE if poison_only else GRADS)),
            grad2=draw(st.sampled_from(NON_FINITE if poison_only else GRADS)),
            repeat=draw(st.sampled_from(REPEATS)),
            method=draw(st.sampled_from(("PUT", "DELETE", "PATCH", "GET", "OPTIONS"))),
        )
        if poison_only and plan["encoding"] == "json-bool":  # booleans would turn a NaN gradient into a finite one
            plan["encoding"] = "json"
        return plan

    return plans()


def draw_plans(n: int, seed: int, poison_only: bool = False) -> list[dict[str, Any]]:
    """``n`` request plans drawn by hypothesis (``@given`` run ``n`` times, each plan recorded)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list[dict[str, Any]] = []
    rounds = 0
    while len(out) < n and rounds < 10:
        @hseed(seed + rounds)
        @settings(max_examples=n - len(out), database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(plan_strategy(poison_only))
        def record(plan: dict[str, Any]) -> None:
            out.append(plan)

        record()
        rounds += 1
    for i, plan in enumerate(out):  # hypothesis repeats simple draws: make seeds (and steps) distinct
        plan["seed"] = (plan["seed"] * 1_000_003 + i + seed * 7919) % 2**32
        if not plan["collide"]:
            plan["step_id"] = 100 + plan["seed"]
    return out[:n]
