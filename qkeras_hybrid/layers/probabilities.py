"""ExpectationToProbabilities: <Z> in [-1, 1] -> two class probabilities."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class ExpectationToProbabilities(keras.layers.Layer):
    """Maps an expectation <Z> to the probabilities (P(0), P(1)) of measuring Z.

    P(0) = (1 + <Z>) / 2 and P(1) = (1 - <Z>) / 2, as the Qiskit textbook's
    hybrid network reads its one-qubit circuit as a two-class classifier.

    Input shape:
      `(batch, 1)`.

    Output shape:
      `(batch, 2)`.

    Example:

    >>> ExpectationToProbabilities()(keras.ops.convert_to_tensor([[1.0], [0.0]])).numpy()
    array([[1. , 0. ],
           [0.5, 0.5]], dtype=float32)
    """

    def build(self, input_shape):
        if input_shape[-1] != 1:
            raise ValueError(f"{self.name} expects inputs of shape (batch, 1), got {tuple(input_shape)}")

    def call(self, inputs):
        p0 = (1.0 + inputs) / 2.0
        return ops.concatenate([p0, 1.0 - p0], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)
