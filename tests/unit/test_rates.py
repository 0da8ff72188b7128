"""Rates beside totals (encap-stats): since the previous report, over the whole run, human units."""
import pytest

from bpftools.rates import RateMeter, human


def test_rate_since_the_previous_report_and_over_the_whole_run():
    meter = RateMeter(start=100.0)
    meter.report(102.0)
    assert meter.rate("a", 20, 2000) == (10.0, 8000.0)  # first report: since start
    meter.report(103.0)
    assert meter.rate("a", 50, 5000) == (30.0, 24000.0)
    assert meter.rate("b", 4, 100) == (4.0, 800.0)  # new row: it had no traffic at the previous report
    assert meter.rate("a", 50, 5000, since=meter.start) == (50 / 3, 5000 * 8 / 3)
    meter.report(104.0)
    assert meter.rate("a", 5, 500) == (5.0, 4000.0)  # went back (an evicted LRU entry): from 0
    meter.report(104.0)
    assert meter.rate("a", 5, 500) == (0.0, 0.0)  # no time passed


@pytest.mark.parametrize("value, text", [
    (0, "0"), (0.5, "0.5"), (1, "1"), (12.345, "12.3"), (999, "999"), (999.6, "1k"), (1234, "1.23k"),
    (12_300_000, "12.3M"), (1.5e9, "1.5G"), (2e12, "2T"),
])
def test_human_units(value, text):
    assert human(value) == text
