"""Gradients of black-box expectation functions from shifted evaluations.

Pure numpy: a differentiator says which parameter sets to evaluate around a
batch of points (`shifted_values`) and how to combine the results into a
vector-Jacobian product (`vjp`). The executors run all shifted sets of a
batch as one job.
"""

from qkeras_hybrid.differentiators.finite_difference import FiniteDifference
from qkeras_hybrid.differentiators.parameter_shift import CentralShift, ParameterShift


def get(identifier, shift=None):
    """A differentiator from a name ("parameter_shift", "finite_difference") or an instance."""
    if isinstance(identifier, CentralShift):
        if shift is not None:
            raise ValueError("Pass `shift` either to the differentiator instance or to the layer, not both")
        return identifier
    if identifier == "parameter_shift":
        return ParameterShift() if shift is None else ParameterShift(shift)
    if identifier == "finite_difference":
        return FiniteDifference() if shift is None else FiniteDifference(shift)
    raise ValueError(
        f"differentiator must be 'parameter_shift', 'finite_difference' or a differentiator instance, got {identifier!r}"
    )


def to_config(differentiator):
    return {"name": differentiator.name, "shift": differentiator.shift}


def from_config(config):
    if isinstance(config, dict):
        return get(config["name"], config["shift"])
    return get(config)


__all__ = ["CentralShift", "FiniteDifference", "ParameterShift", "from_config", "get", "to_config"]
