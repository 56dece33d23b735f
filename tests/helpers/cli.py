"""Running ``perturb`` commands in the tests."""

SOLVE = ["-n", "2", "-b", "2", "--workers", "0", "--device", "cpu"]
"""A quick ``perturb masks``: 2 iterations, batches of 2, no loader workers, on the CPU."""
