"""The test suite, one folder per part of ``pipeline/`` (data, solve, store, metrics, evaluation,
report, jobs, models, cli); shared fixtures in ``conftest.py``, shared plain helpers in
``tests.helpers``, independent reference implementations in ``tests.reference``."""
