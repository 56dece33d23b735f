"""Solving masks: the batched solver, the streaming solver with early stopping, the perturbations,
the mask parametrisations, and the per-image random streams."""

from .problem import Perturber
from .random import counter_normal, counter_uniform
from .solver import SolveResult, batch_problem, solve, solve_problem
from .stream import StreamBatch, solve_stream

__all__ = ["Perturber", "SolveResult", "StreamBatch", "counter_normal", "counter_uniform", "batch_problem", "solve",
           "solve_problem", "solve_stream"]
