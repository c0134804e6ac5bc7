"""The helpers every test and bench relies on: polling that says what never happened, and the benches' statistics."""

from __future__ import annotations

import math
import statistics
import time

import pytest

from bench.common import median, percentile, print_table, stopwatch
from tests.helpers import wait_for


def test_wait_for_returns_the_first_truthy_value():
    answers = iter([None, 0, [], ["ready"], ["later"]])
    assert wait_for(lambda: next(answers), timeout=5, interval=0.01) == ["ready"]


def test_wait_for_gives_up_naming_what_never_happened():
    calls = []
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"^timed out after 0.2 s waiting for the pod to run$"):
        wait_for(lambda: calls.append(1), timeout=0.2, interval=0.05, what="the pod to run")
    assert 0.2 <= time.monotonic() - start < 2
    assert len(calls) >= 2  # polled, and once more at the deadline


def test_wait_for_tries_once_even_without_time():
    assert wait_for(lambda: "done", timeout=0) == "done"


def test_a_predicate_stops_the_wait_by_raising():
    def died():
        raise RuntimeError("server exited with 1")

    with pytest.raises(RuntimeError, match="exited"):
        wait_for(died, timeout=30)


def test_percentiles_are_interpolated_like_statistics_quantiles():
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.5]
    assert median(values) == statistics.median(values)
    for q in (5, 25, 50, 90, 95, 99):
        assert math.isclose(percentile(values, q), statistics.quantiles(values, n=100, method="inclusive")[q - 1])
    assert (percentile([3.0], 95), percentile(values, 0), percentile(values, 100)) == (3.0, 1.0, 10.0)
    assert math.isnan(median([]))


def test_stopwatch_and_table(capsys):
    samples: list[float] = []
    with stopwatch(samples):
        time.sleep(0.01)
    assert len(samples) == 1 and samples[0] >= 0.01
    print_table(["query", "p50 ms"], [["runs of one config", "1.98"]], title="lineage")
    assert capsys.readouterr().out == "\nlineage\n\n| query | p50 ms |\n|---|---:|\n| runs of one config | 1.98 |\n"
