"""Symbol values [B, S] -> gate angles [B, S + E] as plain, differentiable TF ops.

The first S angle slots are the symbol values themselves (the compiler folds
c*s + d into the gate), so the common circuit needs no TF op at all. The E
other expressions follow: affine ones (a + 2*b) as one matmul, any other sympy
expression (sin(a), a*b, ...) lambdified to TF, so TF's chain rule
differentiates it.
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


def _symbolic_cse(exprs):
    """sympy.cse keeping only subexpressions of symbols: a constant one
    (e.g. 1/pi) would become a float32 TF tensor and clash with float64."""
    replacements, reduced = sympy.cse(exprs)
    kept, constants = [], {}
    for sym, sub in replacements:
        sub = sub.subs(constants)
        if sub.free_symbols:
            kept.append((sym, sub))
        else:
            constants[sym] = sub
    return kept, [e.subs(constants) for e in reduced]


def _atan2(y, x):
    """tf.math.atan2 that accepts a plain number for either argument.

    sympy keeps exact zeros as Integer(0) (e.g. atan2(0, x) of an amplitude
    encoding's zero padding, after a `.keras` round trip), which TF would
    make an int32 tensor.
    """
    dtype = next((v.dtype for v in (y, x) if isinstance(v, (tf.Tensor, tf.Variable))), tf.float32)
    return tf.math.atan2(tf.cast(y, dtype), tf.cast(x, dtype))


class AngleMap:
    """Maps symbol values to the angle slots of a compiled program."""

    def __init__(self, exprs, symbols):
        self.symbols = list(symbols)
        num_symbols, num_angles = len(self.symbols), len(exprs)
        self.weights = np.zeros((num_symbols, num_angles))
        self.offsets = np.zeros(num_angles)
        self._nonlinear_slots, nonlinear = [], []
        for slot, expr in enumerate(exprs):
            expr = sympy.sympify(expr)
            affine = _affine(expr, self.symbols)
            if affine is not None:
                self.weights[:, slot], self.offsets[slot] = affine
            else:
                self._nonlinear_slots.append(slot)
                nonlinear.append(expr)
        self.is_affine = not nonlinear
        if nonlinear:
            # One function for all, with common subexpressions computed once
            # (amplitude encodings share most of theirs).
            self._used = sorted(set().union(*[e.free_symbols for e in nonlinear]), key=self.symbols.index)
            self._nonlinear_fn = sympy.lambdify(
                self._used, nonlinear, modules=[{"atan2": _atan2}, "tensorflow"], cse=_symbolic_cse, dummify=True
            )

    @property
    def num_extra(self):
        return self.offsets.size

    @property
    def num_angles(self):
        return len(self.symbols) + self.num_extra

    def __call__(self, values):
        values = tf.convert_to_tensor(values)
        if self.num_extra == 0:
            return values
        return tf.concat([values, self._extra(values)], axis=1)

    def _extra(self, values):
        dtype = values.dtype
        angles = tf.matmul(values, tf.constant(self.weights, dtype)) + tf.constant(self.offsets, dtype)
        if self.is_affine:
            return angles
        batch = tf.shape(values)[:1]
        results = self._nonlinear_fn(*[values[:, self.symbols.index(s)] for s in self._used])
        columns = [tf.broadcast_to(tf.cast(col, dtype), batch) for col in results]
        scatter = np.zeros((len(columns), self.num_extra))
        for row, slot in enumerate(self._nonlinear_slots):
            scatter[row, slot] = 1.0
        return angles + tf.matmul(tf.stack(columns, axis=1), tf.constant(scatter, dtype))
