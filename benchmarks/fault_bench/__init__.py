"""Faults benchmark (issue 12): hostile and broken peers against real server processes on loopback.

A host provider serves peers it does not trust, and a local provider relies on hosts that may
die or answer garbage. Every part runs against real ``python -m codenn ...`` processes on
127.0.0.1 (the serving benchmark's set-up: its cross path ``benchmarks/serving.py:CROSS``
trained once into ``runs/serving-bench``):

1. **Fuzz** (:mod:`.fuzz_plans`, :mod:`.fuzz_build`, :mod:`.fuzz`). Hypothesis draws request
   *plans* (endpoint, caller, shape, datatype, values, encoding, size fields, header lengths,
   steps, gradients, at most three mutations each, most with valid headers and tokens around the
   spec read from ``GET /v2/models/NAME``, so they reach the model code); they are recorded into
   a list, turned into bytes and replayed by concurrent clients, then fixed split-training
   sequences (:data:`.fuzz.SEQUENCES`) are sent. Goal: no answer >= 500.
2. **Poisoning** (:mod:`.poisoning`). Valid finite training steps change the links on purpose, so
   "poisoned" is measured where nothing may change them: a second host process (B) gets the same
   fuzz, except that every gradient it is sent holds NaN or inf (inputs may be anything, NaN and
   1e38 included). A fixed probe (the local prefix of test images, 1 batch + single images) is
   sent to B before and after: an answer that is not 200, holds a non-finite value or differs in
   a single bit from the pre-fuzz answer counts as poisoned, and B must report 0 steps trained.
   On host A, which takes valid training steps too, the probe after the run must be 200 and
   finite.
3. **Kill during split training** (:mod:`.kill`). ``serve-host --save-dir DIR --checkpoint-every
   K``; this process runs :meth:`codenn.remote.split_trainer.SplitTrainer.fit` (the local side)
   while a thread SIGKILLs the host between two checkpoints and restarts it with ``--resume``.
   Goal: steps lost <= K, training finishes, final links finite.
4. **Malformed host replies** (:mod:`.replies`). ``codenn serve`` (the local provider) routes
   through a fake host (a proxy in front of a real host) that answers 200 with wrong shapes, NaN,
   bad ``host_compute_s``, garbage, truncated bodies, 5xx, drips one byte every 0.2 s, hangs or
   resets. Goal: no local request lost; each one that tried the host fell back.
5. **Slow-drip clients** (:mod:`.drip`). Clients drip headers or a body one byte a second into
   host A (``--header-timeout``, ``--body-timeout``) while normal requests flow: the drippers
   must be closed (or get 408) within the deadlines, and normal latency must hold.
6. Peak memory (``VmHWM``) of every host process at the end of its part, and the resident memory
   that forward steps left pending pin (:func:`.memory.pending_memory`), which the size caps do
   not bound.

:mod:`.harness` holds what every part shares (the server processes, the targets, request
plumbing, records, timing), :mod:`.report` the goals and the markdown table, :mod:`.cli` the
command line and the order the parts run in. The entry point is the thin ``benchmarks/faults.py``:

    python benchmarks/faults.py [--quick] [--fuzz 2000] [--out benchmarks/results/faults.json]
"""
