"""Agent Legs benchmarks: `nox -s bench` (or `python -m bench [--smoke] [--only NAME]`)."""
