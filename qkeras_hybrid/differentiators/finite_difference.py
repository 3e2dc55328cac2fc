"""Central finite differences: [f(x + h) - f(x - h)] / (2 h)."""

from qkeras_hybrid.differentiators.parameter_shift import CentralShift


class FiniteDifference(CentralShift):
    """Central finite differences, an O(h^2) approximation for any smooth f.

    Args:
      step: the step h (default 0.01). With shot noise of size sigma the
        error grows like sigma / h: small steps need many shots.
    """

    name = "finite_difference"

    def __init__(self, step=0.01):
        super().__init__(step)

    def denominator(self):
        return 2.0 * self.shift
