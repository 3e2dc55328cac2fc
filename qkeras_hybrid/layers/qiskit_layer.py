"""QiskitLayer: a Qiskit circuit (or any black box) run on a Qiskit backend, as a Keras 3 layer."""

import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from keras.src.utils import naming

from qkeras_hybrid import differentiators
from qkeras_hybrid.backends import qiskit_executor as executors
from qkeras_hybrid.circuits import serialization
from qkeras_hybrid.circuits.compiled import CompiledCircuit, _as_list, is_qiskit_circuit
from qkeras_hybrid.layers._checks import require_tensorflow_backend


def _param_names(params, kind):
    names = []
    for p in params:
        if isinstance(p, str):
            names.append(p)
        elif hasattr(p, "name") and hasattr(p, "sympify"):  # qiskit Parameter
            names.append(p.name)
        else:
            raise TypeError(f"{kind} must be qiskit Parameters or their names, got {p!r}")
    return names


def _sparse_pauli_op(observable):
    from qiskit.quantum_info import SparsePauliOp

    if isinstance(observable, SparsePauliOp):
        return observable
    try:  # a Pauli or a Pauli label
        return SparsePauliOp(observable)
    except Exception as e:
        raise TypeError(
            f"QiskitLayer observables must be qiskit SparsePauliOps, got {type(observable).__name__}: {e}"
        ) from e


def _exporting():
    """True while Keras's `model.export` / `ExportArchive` or `tf.saved_model.save` traces the model.

    Keras traces the serving function in `ExportArchive.write_out` before it
    enters TensorFlow's save context, so its frames are looked for on the stack.
    """
    from tensorflow.python.saved_model import save_context

    if save_context.in_save_context():
        return True
    if tf.executing_eagerly():
        return False
    marker = os.path.join("keras", "src", "export")
    frame = sys._getframe(1)
    while frame is not None:
        if marker in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


@keras.saving.register_keras_serializable(package="qkeras_hybrid")
class QiskitLayer(keras.layers.Layer):
    """A Qiskit circuit run on a Qiskit backend, differentiated by parameter shifts.

    The circuit is a black box run by Qiskit 2's primitives: Aer by default,
    or the `BackendV2`, `EstimatorV2` or `SamplerV2` given. The forward pass
    of a batch is one job; its gradient (with respect to the inputs and the
    weights) is one more job of all shifted parameter sets. In training
    (`training=True`, as in `fit`) both go into one job, and the backward
    pass is a TensorFlow product with the Jacobian it returned. Parameter shifts
    are exact: the circuit is translated to Pauli rotations, each gate gets
    its own parameter, and the chain rule maps back to the circuit's
    parameters, so `2*theta`, reused parameters, `u`, `cp` and `cry` are fine.

    Outputs: the expectation values of `observables` (`SparsePauliOp`s), or,
    for a circuit with measurements and no observables, the mean integer
    value of the measured bitstring (clbit k worth 2^k), as in the Qiskit
    textbook. `shots=None` gives exact values (Aer's estimator); `shots=N`
    samples N shots per parameter set. Values are computed in float64
    whatever the dtype policy; under `mixed_float16` the output is float16
    and the weights stay float32.

    Black boxes: `circuit` may be any object with `run(values) -> outputs`
    (values `[N, P]`, inputs then weights; outputs `[N, O]` or `[N]`); then
    `input_params` and `weight_params` may be counts. Its gradient shifts the
    values themselves (exact only for Pauli-rotation-like dependence, else use
    `differentiator="finite_difference"`).

    Saving: `.keras` files store the circuit as QPY and the backend or
    primitive whole: an `AerSimulator` with its options, noise model, basis
    gates and coupling map; Aer's and Qiskit's reference primitives with their
    options and backend. A backend no file can hold (a device, a fake device,
    `AerSimulator.from_backend(...)`, any other class) makes saving raise an
    error, unless it was registered with
    `qkeras_hybrid.backends.qiskit_executor.register_backend(name, factory)`:
    then the file stores its name, and loading needs the same registration.
    A black box is saved if it has `get_config` and a classmethod
    `from_config` and is registered with
    `keras.saving.register_keras_serializable`. `model.export` (SavedModel)
    cannot contain a Qiskit job: if the circuit compiles to the native
    program, the exported graph runs it on the native simulator (exact
    values, no shot noise); otherwise export raises an error.

    Args:
      circuit: a `qiskit.QuantumCircuit` with `Parameter`s, or a black box.
      observables: a `SparsePauliOp` or a list of them (one output column
        each), or None for a circuit with measurements.
      input_params: the parameters (or names) fed by the inputs, in column
        order. For a black box, a list of names or a count.
      weight_params: the trainable parameters. Defaults to every other
        parameter of the circuit, in circuit order (none for a black box).
      backend: a `BackendV2` (default: `AerSimulator`).
      estimator: an `EstimatorV2` to run on instead (observables).
      sampler: a `SamplerV2` to run on instead (measured circuits).
      shots: None (exact expectation values) or the shots per parameter set.
      shift: the shift of the parameter-shift rule (default pi/2) or the step
        of finite differences (default 0.01).
      differentiator: `"parameter_shift"`, `"finite_difference"`, or an
        instance from `qkeras_hybrid.differentiators`.
      seed: seeds the simulator; every job draws its own seed from it.
      num_outputs: black boxes only: the output width (default: the box's
        `num_outputs` attribute, else one `run` on a row of zeros finds it).
      initializer: initializer of the weights (default uniform in [0, 2 pi)).
      regularizer: optional regularizer of the weights.
      constraint: optional constraint of the weights.

    Input shape:
      `(batch, len(input_params))`. Without input parameters, any input; only
      its batch size is used.

    Output shape:
      `(batch, number of observables)`, or `(batch, 1)` for a measured circuit.

    Example:

    >>> import keras
    >>> from qiskit import QuantumCircuit
    >>> from qiskit.circuit import Parameter
    >>> from qiskit.quantum_info import SparsePauliOp
    >>> x, w = Parameter("x"), Parameter("w")
    >>> qc = QuantumCircuit(1)
    >>> _ = qc.rx(x, 0), qc.ry(w, 0)
    >>> layer = QiskitLayer(qc, SparsePauliOp("Z"), input_params=[x], shots=1000, seed=1)
    >>> layer(keras.ops.zeros((3, 1))).shape
    TensorShape([3, 1])
    """

    def __init__(
        self,
        circuit,
        observables=None,
        input_params=(),
        weight_params=None,
        backend=None,
        estimator=None,
        sampler=None,
        shots=None,
        shift=None,
        differentiator="parameter_shift",
        seed=None,
        num_outputs=None,
        initializer=None,
        regularizer=None,
        constraint=None,
        **kwargs,
    ):
        require_tensorflow_backend(self)
        circuit = self._circuit_from_config(circuit)
        if observables is not None:
            observables = serialization.observables_from_config(_as_list(observables))
        self.backend = executors.backend_from_config(backend)
        self.estimator = executors.primitive_from_config(estimator)
        self.sampler = executors.primitive_from_config(sampler)
        if isinstance(differentiator, dict):  # from a config
            differentiator = differentiators.from_config(differentiator)
        self.differentiator = differentiators.get(differentiator, shift)
        if seed is not None and (isinstance(seed, bool) or int(seed) != seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.shots = shots
        self.is_black_box = not is_qiskit_circuit(circuit)
        if self.is_black_box:
            self._init_black_box(circuit, observables, input_params, weight_params, num_outputs)
        else:
            if num_outputs is not None:
                raise ValueError("num_outputs is for black boxes; a circuit's outputs follow from its observables")
            self._init_circuit(circuit, observables, input_params, weight_params)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomUniform(0.0, 2.0 * math.pi)
        )
        self.regularizer = keras.regularizers.get(regularizer)
        self.constraint = keras.constraints.get(constraint)
        if "name" not in kwargs:
            kwargs["name"] = naming.auto_name(
                "qiskit_black_box" if self.is_black_box else f"qiskit_layer_{self.num_qubits}q"
            )
        super().__init__(**kwargs)
        self._native = None

    def _init_circuit(self, circuit, observables, input_params, weight_params):
        self.circuit = circuit
        self.num_qubits = circuit.num_qubits
        by_name = {p.name: p for p in circuit.parameters}
        self.input_symbols = _param_names(input_params, "input_params")
        if weight_params is None:
            weight_params = [p.name for p in circuit.parameters if p.name not in self.input_symbols]
        self.weight_symbols = _param_names(weight_params, "weight_params")
        names = self.input_symbols + self.weight_symbols
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"Parameters {unknown} are not in the circuit (its parameters: {sorted(by_name)})")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"Parameters {repeated} are listed more than once in input_params / weight_params")
        unbound = sorted(set(by_name) - set(names))
        if unbound:
            raise ValueError(f"Circuit parameters {unbound} are neither input_params nor weight_params")
        self.observables = [_sparse_pauli_op(o) for o in observables or []]
        self.executor = executors.QiskitExecutor(
            circuit, self.observables, [by_name[n] for n in names], backend=self.backend, estimator=self.estimator,
            sampler=self.sampler, shots=self.shots, seed=self.seed,
        )
        self.num_outputs = self.executor.num_outputs

    def _init_black_box(self, box, observables, input_params, weight_params, num_outputs):
        if not callable(getattr(box, "run", None)):
            raise TypeError(
                "circuit must be a qiskit.QuantumCircuit or a black box with a run(values) method, "
                f"got {type(box).__name__}"
            )
        if observables is not None or self.backend is not None or self.estimator is not None or self.sampler is not None:
            raise ValueError("A black box runs itself: observables, backend, estimator and sampler must be None")
        if self.shots is not None or self.seed is not None:
            raise ValueError("A black box handles its own shots and seeds: shots and seed must be None")

        def names(params, prefix):
            if isinstance(params, (int, np.integer)):
                return [f"{prefix}{i}" for i in range(int(params))]
            return _param_names(params or (), prefix)

        self.circuit = None  # nothing for TensorBoard's circuit summary to draw
        self.box = box
        self.num_qubits = getattr(box, "num_qubits", None)
        self.observables = []
        self.input_symbols = names(input_params, "x")
        self.weight_symbols = names(weight_params, "w")
        num_params = len(self.input_symbols) + len(self.weight_symbols)
        num_outputs = num_outputs if num_outputs is not None else getattr(box, "num_outputs", None)
        self.executor = executors.BlackBoxExecutor(box, num_params, num_outputs)
        if num_outputs is None:
            num_outputs = self.executor.run(np.zeros((1, num_params))).shape[1]
            self.executor.num_outputs = num_outputs
        self.num_outputs = int(num_outputs)

    @staticmethod
    def _circuit_from_config(circuit):
        if isinstance(circuit, dict) and circuit.get("format") == "black_box":
            return keras.saving.deserialize_keras_object(circuit["config"])
        return serialization.circuit_from_config(circuit)

    def build(self, input_shape):
        if self.input_symbols:
            if len(input_shape) != 2:
                raise ValueError(f"{self.name} expects inputs of shape (batch, features), got {tuple(input_shape)}")
            if input_shape[-1] is not None and input_shape[-1] != len(self.input_symbols):
                raise ValueError(
                    f"{self.name} expects inputs of width {len(self.input_symbols)} "
                    f"(input_params {self.input_symbols}), got input shape {tuple(input_shape)}"
                )
        self.quantum_weights = self.add_weight(
            name="quantum_weights",
            shape=(len(self.weight_symbols),),
            initializer=self.initializer,
            regularizer=self.regularizer,
            constraint=self.constraint,
            autocast=False,  # angles read at full precision, not in a mixed policy's float16
        )

    def call(self, inputs, training=None):
        inputs = tf.convert_to_tensor(inputs)
        batch = tf.shape(inputs)[0]
        # float64 inside whatever the dtype policy: under mixed_float16 only the output is cast to float16.
        weights = tf.cast(tf.convert_to_tensor(self.quantum_weights), tf.float64)
        values = tf.tile(weights[None, :], tf.stack([batch, 1]))
        if self.input_symbols:
            values = tf.concat([tf.cast(inputs, tf.float64), values], axis=1)
        if _exporting():
            outputs = self._native_circuit().expectation(values, dtype=tf.float64)
        else:
            outputs = self._run(values, with_jacobian=training is True)
        return tf.cast(outputs, self.compute_dtype)

    def _run(self, values, with_jacobian=False):
        """Runs the executor through tf.numpy_function, differentiable by tf.custom_gradient.

        In training (`with_jacobian`), the forward job also runs the shifted
        parameter sets and returns the Jacobian, so a train step is one job
        and the gradient is a TF product with no Python call.
        """
        executor, differentiator, num_outputs = self.executor, self.differentiator, self.num_outputs

        def forward(v):
            return executor.run(v).astype(np.float64)

        def forward_and_jacobian(v):
            outputs, jacobian = executor.run_with_jacobian(v, differentiator)
            return np.asarray(outputs, dtype=np.float64), np.asarray(jacobian, dtype=np.float64)

        def backward(v, dy):
            return executor.vjp(v, dy, differentiator).astype(np.float64)

        @tf.custom_gradient
        def run(v):
            if with_jacobian:
                outputs, jacobian = tf.numpy_function(forward_and_jacobian, [v], [tf.float64, tf.float64],
                                                      stateful=True, name="qiskit_run_and_parameter_shift")
                jacobian.set_shape([v.shape[0], num_outputs, v.shape[1]])
            else:
                outputs = tf.numpy_function(forward, [v], tf.float64, stateful=True, name="qiskit_run")
            outputs.set_shape([v.shape[0], num_outputs])

            def grad(dy):
                dy = tf.cast(dy, tf.float64)
                if with_jacobian:
                    return tf.linalg.matvec(jacobian, dy, transpose_a=True)
                g = tf.numpy_function(backward, [v, dy], tf.float64, stateful=True, name="qiskit_parameter_shift")
                g.set_shape(v.shape)
                return g

            return outputs, grad

        return run(values)

    def _native_circuit(self):
        """The circuit compiled for the native simulator, for SavedModel export."""
        if self._native is None:
            reason = None
            if self.is_black_box:
                reason = "it wraps a black box, which only runs in Python"
            else:
                try:
                    observables = self.observables or [executors.bitstring_value_observable(self.circuit)]
                    self._native = CompiledCircuit(
                        self.circuit, observables, symbols=self.input_symbols + self.weight_symbols
                    )
                except Exception as e:
                    reason = f"its circuit does not compile to the native program ({type(e).__name__}: {e})"
            if reason is not None:
                raise ValueError(
                    f"Cannot export {self.name} as a SavedModel: {reason}. A SavedModel cannot call a Qiskit "
                    "backend; only circuits that compile to the native program export (they run on the native "
                    "simulator)."
                )
        return self._native

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_outputs)

    def get_config(self):
        config = super().get_config()
        if self.is_black_box:
            if not (hasattr(self.box, "get_config") and hasattr(type(self.box), "from_config")):
                raise TypeError(
                    f"{self.name} cannot be saved: its black box {type(self.box).__name__} needs get_config and "
                    "from_config, and registration with keras.saving.register_keras_serializable"
                )
            circuit = {"format": "black_box", "config": keras.saving.serialize_keras_object(self.box)}
            observables = None
        else:
            circuit = serialization.circuit_to_config(self.circuit)
            observables = serialization.observables_to_config(self.observables) if self.observables else None
        config.update(
            {
                "circuit": circuit,
                "observables": observables,
                "input_params": list(self.input_symbols),
                "weight_params": list(self.weight_symbols),
                "backend": executors.backend_to_config(self.backend),
                "estimator": executors.primitive_to_config(self.estimator),
                "sampler": executors.primitive_to_config(self.sampler),
                "shots": self.shots,
                "shift": None,
                "differentiator": differentiators.to_config(self.differentiator),
                "seed": self.seed,
                "num_outputs": self.num_outputs if self.is_black_box else None,
                "initializer": keras.initializers.serialize(self.initializer),
                "regularizer": keras.regularizers.serialize(self.regularizer),
                "constraint": keras.constraints.serialize(self.constraint),
            }
        )
        return config
