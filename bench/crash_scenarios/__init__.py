"""Crash scenarios for bench/crash_injection.py: each module (not starting with "_") exposes `NAME` and
`run(kills: int, seed: int) -> dict` with keys kills, violations_before, violations_after and optionally notes.
`_harness` holds what they share (a workspace to crash in, workers to kill, the invariants, the reconcile)."""
