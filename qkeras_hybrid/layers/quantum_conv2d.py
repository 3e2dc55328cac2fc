"""QuantumConv2D: the quantum convolution of QCCNN (Liu et al.) as a Keras 3 layer."""

import math
import numbers

import cirq
import keras
import sympy
import tensorflow as tf

from qkeras_hybrid import noise as noise_lib
from qkeras_hybrid.circuits import noisy as noisy_lib
from qkeras_hybrid.circuits.compiled import CompiledCircuit
from qkeras_hybrid.layers import _checks, quantum_layer
from qkeras_hybrid.layers._seeds import SeedStateMixin

MAX_KERNEL_QUBITS = 20


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _pair(value, name):
    """An int or a pair of ints -> a pair of positive Python ints."""
    items = (value, value) if _is_int(value) else value
    try:
        items = tuple(items)
    except TypeError:
        items = ()
    if len(items) != 2 or not all(_is_int(v) and v > 0 for v in items):
        raise ValueError(f"{name} must be a positive integer or a pair of positive integers, got {value!r}")
    return tuple(int(v) for v in items)


def filter_circuit(kernel_size, depth):
    """The circuit of one filter on one window, with its qubits and symbols.

    Pixel `p_i` of the window (row-major) is encoded on qubit `i` as
    `cos(p_i)|0> + sin(p_i)|1>`, i.e. `cirq.ry(2 * p_i)`; then `depth` layers
    of [`cirq.ry(w_{d,i})` on every qubit, CNOT chain i -> i+1].

    Returns:
      `(circuit, qubits, pixel_symbols, weight_symbols)`, the weight symbols
      ordered layer by layer (`w_0_0, w_0_1, ..., w_1_0, ...`).
    """
    rows, cols = kernel_size
    n = rows * cols
    qubits = cirq.LineQubit.range(n)
    pixels = [sympy.Symbol(f"p{i}") for i in range(n)]
    weights = [sympy.Symbol(f"w_{d}_{i}") for d in range(depth) for i in range(n)]
    circuit = cirq.Circuit(cirq.Moment(cirq.ry(2 * p)(q) for p, q in zip(pixels, qubits)))
    for d in range(depth):
        circuit.append(cirq.Moment(cirq.ry(weights[d * n + i])(q) for i, q in enumerate(qubits)))
        circuit.append(cirq.CNOT(qubits[i], qubits[i + 1]) for i in range(n - 1))
    return circuit, qubits, pixels, weights


def _output_length(length, kernel, stride, padding):
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return (length - kernel) // stride + 1


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class QuantumConv2D(SeedStateMixin, keras.layers.Layer):
    """2D quantum convolution: each window is run through a parameterized circuit.

    The quantum convolutional layer of "Hybrid Quantum-Classical Convolutional
    Neural Networks" (Liu et al., 2019). Every `m x n` window of every input
    channel is encoded into `m * n` qubits, pixel `p` (an angle in radians;
    the paper's pixels are in [0, 1]) as `cos(p)|0> + sin(p)|1>`, which is
    `cirq.ry(2 * p)`. The filter's own circuit follows: `depth` layers of
    [Ry(w) on every qubit, CNOT chain], and the window's output is the
    expectation `<Z x Z x ... x Z>` over all `m * n` qubits, in [-1, 1].

    Each filter has one set of weights, shape `(depth, m * n)`, applied to
    every input channel separately, so the output has `channels * filters`
    channels, channel-major: output channel `c * filters + f` is filter `f`
    on input channel `c`. All windows of all channels, images and filters of
    a batch go to the simulator in one call; gradients with respect to the
    filter weights and the input pixels come from the adjoint method.

    Args:
      filters: number of quantum filters (positive int).
      kernel_size: `m` or `(m, n)`: the window; `m * n` qubits (at most 20).
      strides: an int or a pair of ints.
      padding: `"valid"` or `"same"` (as `keras.layers.Conv2D`; padded
        pixels are 0, which encode |0>).
      depth: number of [Ry + CNOT chain] layers of each filter circuit
        (0 gives the bare encoding: the output is `prod_i cos(2 p_i)`).
      data_format: only `"channels_last"` (or None) is supported.
      initializer: initializer of the weights (default uniform in [0, 2 pi)).
      regularizer: optional regularizer of the weights.
      constraint: optional constraint of the weights.
      shots: None for exact expectations, or the number of measurements of
        each window's circuit (the output is then a sample mean, multiples
        of 2 / shots).
      seed: with `shots` or trajectories: an int for the same sequence of
        outputs in a fresh process, None for a different one every run. The
        seed state is saved in `.keras` files and SavedModels, so a reloaded
        model continues the sequence (see `QuantumLayer`).
      differentiator: with `shots`: `"parameter_shift"` (default),
        `"adjoint"` (exact gradient of the analytic expectation, a
        simulator's privilege) or `"finite_difference"` /
        `qkeras_hybrid.differentiators.FiniteDifference(step)`, as in
        `QuantumLayer`.
      noise, simulation, trajectories: noise on every window's circuit
        (a `cirq.NoiseModel`, a per-gate table, a `qiskit_aer.noise.NoiseModel`),
        simulated as in `QuantumLayer`: exact density matrices up to 12
        qubits per window by default, else trajectories.

    Input shape:
      4D tensor `(batch, height, width, channels)`, real and finite.

    Output shape:
      4D tensor `(batch, new_height, new_width, channels * filters)`, the
      spatial size as for `keras.layers.Conv2D`, in the layer's compute
      dtype (under mixed precision the circuits still run in float32).

    Example:

    >>> import keras
    >>> layer = QuantumConv2D(filters=2, kernel_size=2, depth=4)
    >>> layer(keras.ops.zeros((8, 3, 3, 1))).shape
    TensorShape([8, 2, 2, 2])
    """

    def __init__(
        self,
        filters,
        kernel_size=(2, 2),
        strides=1,
        padding="valid",
        depth=4,
        data_format=None,
        initializer=None,
        regularizer=None,
        constraint=None,
        shots=None,
        seed=None,
        differentiator=None,
        noise=None,
        simulation="auto",
        trajectories=None,
        **kwargs,
    ):
        _checks.require_tensorflow_backend(self)
        self.simulation, self.trajectories = noisy_lib.check_simulation(simulation, trajectories,
                                                                        type(self).__name__)
        self.shots, self.seed = quantum_layer.check_shots(shots, seed, "native", type(self).__name__)
        if self.shots is None and differentiator is not None:
            raise ValueError("QuantumConv2D computes exact adjoint gradients without shots; differentiator must be "
                             f"None unless shots= is given, got {differentiator!r}")
        self.differentiator = (quantum_layer.shot_differentiator(differentiator, type(self).__name__)
                               if self.shots is not None else None)
        if not _is_int(filters) or filters <= 0:
            raise ValueError(f"filters must be a positive integer, got {filters!r}")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
            raise ValueError(f'padding must be "valid" or "same", got {padding!r}')
        if not _is_int(depth) or depth < 0:
            raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f'QuantumConv2D supports only data_format="channels_last", got {data_format!r}')
        num_qubits = self.kernel_size[0] * self.kernel_size[1]
        if num_qubits > MAX_KERNEL_QUBITS:
            raise ValueError(
                f"kernel_size {self.kernel_size} needs {num_qubits} qubits per window; at most "
                f"{MAX_KERNEL_QUBITS} are supported"
            )
        self.noise = noise_lib.resolve(noise, num_qubits)
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.padding = padding.lower()
        self.depth = int(depth)
        self.data_format = "channels_last"
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomUniform(0.0, 2.0 * math.pi)
        )
        self.regularizer = keras.regularizers.get(regularizer)
        self.constraint = keras.constraints.get(constraint)
        self.circuit, qubits, pixels, weights = filter_circuit(self.kernel_size, self.depth)
        self.num_qubits = num_qubits
        self.input_symbols = [str(s) for s in pixels]
        self.weight_symbols = [str(s) for s in weights]
        self.observables = [cirq.PauliString({q: cirq.Z for q in qubits})]
        self.compiled = CompiledCircuit(self.circuit, self.observables, symbols=pixels + weights, qubits=qubits,
                                        noise=self.noise, simulation=self.simulation, trajectories=self.trajectories)
        self._noisy = self.compiled.noisy
        noisy_lib.check_density_memory(self._noisy, type(self).__name__)
        quantum_layer.check_noisy_shots(self._noisy, self.shots, type(self).__name__)
        if self.shots is not None or (self._noisy is not None and self._noisy.needs_seed):
            self._seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{self.name} expects inputs (batch, height, width, channels), got {tuple(input_shape)}")
        if input_shape[-1] is None:
            raise ValueError(f"{self.name} needs a known number of channels, got input shape {tuple(input_shape)}")
        if self.padding == "valid":
            for axis, size, kernel in zip(("height", "width"), input_shape[1:3], self.kernel_size):
                if size is not None and size < kernel:
                    raise ValueError(
                        f'{self.name}: input {axis} {size} is smaller than the kernel ({kernel}) with padding="valid"; '
                        f"input shape {tuple(input_shape)}"
                    )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})
        self._channels = int(input_shape[-1])
        self.quantum_weights = self.add_weight(
            name="quantum_weights",
            shape=(self.filters, self.depth, self.num_qubits),
            initializer=self.initializer,
            regularizer=self.regularizer,
            constraint=self.constraint,
            autocast=False,  # angles stay float32 under mixed precision
        )

    @property
    def input_dtype(self):
        # Float inputs are cast to the simulation dtype (float32 under mixed precision), not to float16.
        return _checks.internal_dtype(self.compute_dtype)

    def call(self, inputs):
        dtype = self.input_dtype
        inputs = tf.convert_to_tensor(inputs)
        _checks.check_real_dtype(self, inputs)
        inputs = self._check_channels(tf.cast(inputs, dtype))
        inputs = _checks.check_finite(inputs, self._describe_pixel)
        rows, cols = self.kernel_size
        channels = self._channels
        # Patches come out flattened as (row, col, channel), channel fastest.
        patches = tf.image.extract_patches(
            inputs,
            sizes=[1, rows, cols, 1],
            strides=[1, *self.strides, 1],
            rates=[1, 1, 1, 1],
            padding=self.padding.upper(),  # TF's SAME is Keras's "same" (extra padding after)
        )
        shape = tf.shape(patches)
        batch, out_h, out_w = shape[0], shape[1], shape[2]
        windows = tf.reshape(patches, [batch, out_h, out_w, self.num_qubits, channels])
        windows = tf.transpose(windows, [0, 1, 2, 4, 3])  # [B, H', W', C, m*n]
        num_windows = batch * out_h * out_w * channels
        pixels = tf.reshape(windows, [num_windows, 1, self.num_qubits])
        pixels = tf.broadcast_to(pixels, [num_windows, self.filters, self.num_qubits])
        weights = tf.cast(tf.convert_to_tensor(self.quantum_weights), dtype)
        weights = _checks.check_finite(weights, self._describe_weight)
        weights = tf.reshape(weights, [1, self.filters, self.depth * self.num_qubits])
        weights = tf.broadcast_to(weights, [num_windows, self.filters, self.depth * self.num_qubits])
        # One row per (image, window, channel, filter): a single simulator call.
        values = tf.reshape(tf.concat([pixels, weights], axis=-1), [-1, len(self.compiled.symbols)])
        if self.shots is None:
            seed = self._seed_generator.next() if self._noisy is not None and self._noisy.needs_seed else None
            outputs = self.compiled.expectation(values, dtype=dtype, seed=seed)
        else:
            outputs = self.compiled.sampled_expectation(values, self.shots, self._seed_generator.next(),
                                                        self.differentiator, dtype=dtype)
        outputs = tf.reshape(outputs, [batch, out_h, out_w, channels * self.filters])
        return outputs if outputs.dtype == self.compute_dtype else tf.cast(outputs, self.compute_dtype)

    def _check_channels(self, inputs):
        """Inputs with the channel count of `build`: checked at run time where the graph does not know it."""
        if inputs.shape.rank == 4 and inputs.shape[-1] is not None:
            return inputs  # Keras's input_spec has compared it
        shape = tf.shape(inputs)
        ok = tf.logical_and(tf.equal(tf.size(shape), 4), tf.equal(shape[-1], self._channels))
        message = tf.strings.format(f"{self.name} expects inputs (batch, height, width, {self._channels}), got "
                                    "inputs of shape {}", shape)
        with tf.control_dependencies([tf.raw_ops.Assert(condition=ok, data=[message])]):
            inputs = tf.identity(inputs)
        inputs.set_shape([None, None, None, self._channels])
        return inputs

    def _describe_pixel(self, index):
        return tf.strings.join([f"{self.name}: inputs[", tf.strings.reduce_join(tf.strings.as_string(index),
                                                                                 separator=", "), "]"])

    def _describe_weight(self, index):
        filters, layer, qubit = tf.unstack(tf.strings.as_string(index))
        return tf.strings.join([f"{self.name}: weight quantum_weights[", filters, ", ", layer, ", ", qubit,
                                "] (filter ", filters, ", layer ", layer, ", qubit ", qubit, ")"])

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        out_h = _output_length(height, self.kernel_size[0], self.strides[0], self.padding)
        out_w = _output_length(width, self.kernel_size[1], self.strides[1], self.padding)
        return (batch, out_h, out_w, None if channels is None else channels * self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": list(self.kernel_size),
                "strides": list(self.strides),
                "padding": self.padding,
                "depth": self.depth,
                "data_format": self.data_format,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "constraint": keras.constraints.serialize(self.constraint),
                "shots": self.shots,
                "seed": self.seed,
                "differentiator": quantum_layer.shot_differentiator_to_config(self.differentiator),
                **quantum_layer.noise_config(self.noise, self.simulation, self.trajectories),
            }
        )
        return config
