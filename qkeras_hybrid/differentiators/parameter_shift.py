"""The parameter-shift rule.

For a gate exp(-i g P / 2) with P a Pauli string (rx, ry, rz, rxx, ryy, rzz,
rzx), any expectation value is a + b cos(g) + c sin(g), so

    df/dg = [f(g + s) - f(g - s)] / (2 sin s)

exactly, for any shift s that is not a multiple of pi. Both rules here are
central differences that differ only in their denominator.
"""

import numpy as np


class CentralShift:
    """Evaluates f at values +- shift along each parameter; base of both rules."""

    name = None

    def __init__(self, shift):
        shift = float(shift)
        if not np.isfinite(shift) or shift == 0.0:
            raise ValueError(f"{type(self).__name__} needs a finite non-zero shift, got {shift}")
        self.shift = shift

    def denominator(self):
        raise NotImplementedError

    def shifted_values(self, values):
        """[B, P] points -> [2 * P * B, P]: row (2p + sign) * B + b is values[b] with p shifted (+ then -)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"values must have shape [batch, parameters], got {values.shape}")
        batch, params = values.shape
        out = np.broadcast_to(values, (params, 2, batch, params)).copy()
        p = np.arange(params)
        out[p, 0, :, p] += self.shift
        out[p, 1, :, p] -= self.shift
        return out.reshape(2 * params * batch, params)

    def jacobian(self, results, batch, params):
        """Results [2 * P * B, O] of `shifted_values` -> the Jacobian [B, O, P]."""
        results = np.asarray(results, dtype=np.float64).reshape(params, 2, batch, -1)
        return np.transpose((results[:, 0] - results[:, 1]) / self.denominator(), (1, 2, 0))

    def vjp(self, results, upstream):
        """Results of `shifted_values` and the upstream gradient [B, O] -> d(sum upstream * f)/d values [B, P]."""
        upstream = np.asarray(upstream, dtype=np.float64)
        batch = upstream.shape[0]
        params = np.asarray(results).shape[0] // (2 * batch) if batch else 0
        if batch == 0 or params == 0:
            return np.zeros((batch, params))
        return np.einsum("bop,bo->bp", self.jacobian(results, batch, params), upstream)

    def __repr__(self):
        return f"{type(self).__name__}(shift={self.shift!r})"


class ParameterShift(CentralShift):
    """The parameter-shift rule: exact for Pauli-rotation gate parameters.

    Args:
      shift: the shift s (default pi/2); the rule divides by 2 sin(s).
    """

    name = "parameter_shift"

    def __init__(self, shift=np.pi / 2):
        super().__init__(shift)
        if abs(np.sin(self.shift)) < 1e-6:
            raise ValueError(f"The parameter shift must not be a multiple of pi (sin(shift) = 0), got {self.shift}")

    def denominator(self):
        return 2.0 * np.sin(self.shift)
