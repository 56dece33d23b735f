"""The benchmark harness: ``python benchmarks/run.py MODE [options]`` (see benchmarks/README.md).

Not part of the ``pipeline`` package and not installed with it.
"""
