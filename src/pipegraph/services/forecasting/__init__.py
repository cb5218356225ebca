"""Forecast models fitted from a pipeline's history, and the questions asked of them.

- ``calibration``: a :class:`pipesim.Model` from stage history as of any date (the one bridge to pipesim);
  ``fast`` reads the same sums from the kept totals as of now, ``cache`` shares one calibration per
  pipeline while its history stands.
- The statistics behind it: ``durations`` (families of time in stage, times to advance and to loss),
  ``arrivals`` (weekday profile and trend), ``segments`` (conversion by source and owner), ``lead_odds``
  (each open lead's chance to win within a horizon).
- ``questions`` (forecast, leads needed, what-if, capacity) and ``jobs`` (the same as background runs).
- ``synthetic``: histories drawn from known truths, for the tests and ``scripts/backtest.py``.
"""
