"""Options passed through to a library: names from signatures, command-line strings typed by default."""

import pytest

from pipeline.errors import ConfigError
from pipeline.methods.library_options import coerce, merge_options, signature_defaults


class Library:
    def __init__(self, model, multiply_by_inputs: bool = True):
        pass

    def attribute(self, inputs, target=None, n_steps: int = 50, internal_batch_size=None, window=(3, 8, 8),
                  stdevs: float = 1.0, method: str = "gausslegendre", **kwargs):
        pass


def test_signature_defaults_skip_what_the_method_supplies():
    found = signature_defaults([Library.__init__, Library.attribute], skip=("model", "inputs", "target"))
    assert found == {"multiply_by_inputs": True, "n_steps": 50, "internal_batch_size": None, "window": (3, 8, 8),
                     "stdevs": 1.0, "method": "gausslegendre"}


@pytest.mark.parametrize("text, default, expected", [
    ("false", True, False), ("Yes", False, True), ("32", 50, 32), ("0.5", 1.0, 0.5),
    ("3,16,16", (3, 8, 8), (3, 16, 16)), ("(3, 4)", (1,), (3, 4)), ("8", (3, 8, 8), (8,)), ("64", None, 64),
    ("None", None, None), ("riemann_left", None, "riemann_left"), ("riemann", "gausslegendre", "riemann"),
    (7, 50, 7)])
def test_command_line_strings_take_the_defaults_type(text, default, expected):
    assert coerce("x", text, default) == expected


def test_bad_values_and_unknown_names_are_one_error():
    with pytest.raises(ConfigError, match=r"option flag='maybe' is not a bool \(default True\)"):
        coerce("flag", "maybe", True)
    with pytest.raises(ConfigError, match=r"m has no option 'nsteps', 'x'; options: n_steps, method"):
        merge_options("m", {"nsteps": 3, "x": 1}, {"n_steps": 50, "method": "a"})
    assert merge_options("m", {"n_steps": "3"}, {"n_steps": 50, "method": "a"}) == {"n_steps": 3, "method": "a"}
