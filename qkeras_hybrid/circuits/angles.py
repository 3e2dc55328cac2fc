"""Symbol values [B, S] -> gate angles [B, A] as plain, differentiable TF ops.

Affine expressions (the common case: x, 2*x + w, theta/pi) become one matmul;
any other sympy expression (sin(a), a*b, ...) is lambdified to TF, so TF's
chain rule differentiates it.
"""

import numpy as np
import sympy
import tensorflow as tf


def _affine(expr, symbols):
    """(coefficients, offset) if expr is affine in symbols, else None."""
    coeffs = []
    for s in symbols:
        d = sympy.diff(expr, s)
        if d.free_symbols:
            return None
        coeffs.append(float(d))
    offset = expr.subs({s: 0 for s in symbols})
    if offset.free_symbols:
        return None
    return np.array(coeffs), float(offset)


class AngleMap:
    """Maps symbol values to the angle slots of a compiled program."""

    def __init__(self, exprs, symbols):
        self.symbols = list(symbols)
        num_symbols, num_angles = len(self.symbols), len(exprs)
        self.weights = np.zeros((num_symbols, num_angles))
        self.offsets = np.zeros(num_angles)
        self._nonlinear = []  # (slot, fn, symbol indices)
        for slot, expr in enumerate(exprs):
            expr = sympy.sympify(expr)
            affine = _affine(expr, self.symbols)
            if affine is not None:
                self.weights[:, slot], self.offsets[slot] = affine
                continue
            used = sorted(expr.free_symbols, key=lambda s: self.symbols.index(s))
            fn = sympy.lambdify(used, expr, modules="tensorflow")
            self._nonlinear.append((slot, fn, [self.symbols.index(s) for s in used]))
        self.is_affine = not self._nonlinear

    @property
    def num_angles(self):
        return self.offsets.size

    def __call__(self, values):
        values = tf.convert_to_tensor(values)
        dtype = values.dtype
        angles = tf.matmul(values, tf.constant(self.weights, dtype)) + tf.constant(self.offsets, dtype)
        if not self._nonlinear:
            return angles
        batch = tf.shape(values)[:1]
        columns = []
        for _, fn, idx in self._nonlinear:
            col = fn(*[values[:, i] for i in idx])
            columns.append(tf.broadcast_to(tf.cast(col, dtype), batch))
        scatter = np.zeros((len(columns), self.num_angles))
        for row, (slot, _, _) in enumerate(self._nonlinear):
            scatter[row, slot] = 1.0
        return angles + tf.matmul(tf.stack(columns, axis=1), tf.constant(scatter, dtype))
