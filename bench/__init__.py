"""genqueue's benchmark harness: ``python -m bench`` (``make bench``, ``make bench-10k``,
``make bench-smoke``); results in ``bench/results.json`` and ``bench/RESULTS.md``."""
