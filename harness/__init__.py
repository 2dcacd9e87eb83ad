"""escp benchmark harness: datasets, scenarios, peers, runner, results, report, regression check.

Run it with `nox -s bench` (or `python -m harness bench`); see harness/README.md.
"""
