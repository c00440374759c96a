"""Benchmark scenarios: one module per scenario, found and run by `benchmarks.run`.

The contract
------------
A scenario is a module in this package that defines::

    def run(quick: bool) -> dict: ...

`run` sets up what it needs (its own `agentdata serve` process, reference servers,
tables), measures each subject side by side with its reference in the same run, tears
everything down, and returns a JSON-serialisable dict with at least:

``name``       the scenario's short name (the module name), e.g. ``"dataplane"``
``title``      one line for humans (optional; defaults to the name)
``measures``   what it measures, in a sentence or two
``data``       the data it uses (rows, columns, bytes, how it was generated)
``reference``  what each figure is compared against, and why that is fair
``results``    raw figures: any JSON (per-run times, latencies, RSS samples, ...)
``metrics``    rows of the summary table, each built with `benchmarks.common.metric`:
               ``{"metric", "value", "unit", "reference", "reference_label", "ratio",
               "aim", "met", "spread"}``; ``ratio`` is value / reference where both
               are numbers, ``aim`` a short text such as ``"<= 1.15"``, ``met``
               True/False/None (no aim) and ``spread`` the (min, max) behind a median
``plots``      PNG file names written into the results directory (optional)
``notes``      free-text caveats (optional): what was skipped and why, noisy runs

Where a subject cannot run (for example a protocol not implemented yet), the
scenario still returns the figures it has, with a metric whose ``value`` is None and
a note that says why, rather than raising. An exception escaping `run` is recorded by
the runner as a failed scenario; the other scenarios still run.

Helpers for all of this (a real server on free ports, RSS sampling, client
processes, medians with min/max, plots) live in `benchmarks.common`; the client
side of every measurement runs in a separate process (`benchmarks.clients`), so the
server and the client never share a GIL.
"""
