"""Checks the quantum layers share: Keras backend, dtypes, input shapes, finite values.

Errors come in the layer's terms (its name, its input columns and symbols,
its weights), never in the simulator's (angle slots). Checks that need the
values run in the graph and raise `tf.errors.InvalidArgumentError`.
"""

import keras
import tensorflow as tf

from qkeras_hybrid.backends._validation import check_finite  # noqa: F401  (re-exported for the layers)


def require_tensorflow_backend(layer):
    """Raises NotImplementedError unless Keras runs on its TensorFlow backend.

    The simulators are TensorFlow ops (and TFQ's, and `tf.custom_gradient`
    for Qiskit), so on JAX or PyTorch an eager call may work but `fit` fails
    deep inside Keras; refusing at construction says why and what to do.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise NotImplementedError(
            f"{type(layer).__name__} needs Keras's TensorFlow backend (it runs TensorFlow ops), but Keras is "
            f"running on the {backend!r} backend (keras.backend.backend()). Select TensorFlow with the environment "
            "variable KERAS_BACKEND=tensorflow, set before keras is imported (or \"backend\": \"tensorflow\" in "
            "~/.keras/keras.json)."
        )


def internal_dtype(compute_dtype):
    """The dtype a quantum layer simulates in: float64 for float64 layers, else float32.

    Mixed-precision policies (`mixed_float16`, `mixed_bfloat16`) compute in
    16 bits, which the simulator does not support and which would round
    rotation angles (float16 keeps 11 bits: 0.004 rad at 2 pi); like Keras's
    normalization layers, quantum layers compute in float32 inside and
    return the policy's compute dtype.
    """
    return "float64" if keras.backend.standardize_dtype(compute_dtype) == "float64" else "float32"


def check_real_dtype(layer, tensor, what="inputs"):
    """TypeError unless `tensor` holds real numbers (floats or integers)."""
    dtype = tf.as_dtype(tensor.dtype)
    if dtype == tf.bool or not (dtype.is_floating or dtype.is_integer):
        hint = " (its imaginary parts would be dropped)" if dtype.is_complex else ""
        raise TypeError(f"{layer.name} takes real-valued {what} (floats or integers), got dtype {dtype.name}{hint}")


def _expected(symbols):
    # No quotes around names: TF's Assert prints its message with quotes escaped.
    return f"(batch, {len(symbols)}) (input_symbols [{', '.join(symbols)}])"


def check_feature_shape(layer, shape, symbols):
    """ValueError unless a static shape can be `(batch, len(symbols))`."""
    shape = tuple(shape)
    if len(shape) != 2:
        raise ValueError(f"{layer.name} expects inputs of shape {_expected(symbols)}, got inputs of shape {shape}")
    if shape[1] is not None and shape[1] != len(symbols):
        raise ValueError(f"{layer.name} expects inputs of width {len(symbols)}: shape {_expected(symbols)}; got "
                         f"inputs of width {shape[1]} (shape {shape})")


def check_features(layer, inputs, symbols):
    """`inputs` [batch, len(symbols)], checked: rank and width, at trace and at run time.

    ValueError when the static shape is wrong; when the width (or rank) is
    only known at run time (`keras.Input((None,))`, a `tf.function` with a
    `[None, None]` signature), an InvalidArgumentError at run time: extra
    columns must not take the place of the weights.
    """
    shape = inputs.shape
    if shape.rank is not None:
        check_feature_shape(layer, shape, symbols)
        if shape[1] is not None:
            return inputs
    # Only in graphs: eager tensors always have a full static shape.
    actual = tf.shape(inputs)
    ok = tf.logical_and(tf.equal(tf.size(actual), 2), tf.equal(actual[-1], len(symbols)))
    message = tf.strings.format(f"{layer.name} expects inputs of shape {_expected(symbols)}, got inputs of shape {{}}",
                                actual)
    with tf.control_dependencies([tf.raw_ops.Assert(condition=ok, data=[message])]):
        inputs = tf.identity(inputs)
    inputs.set_shape([None, len(symbols)])
    return inputs
