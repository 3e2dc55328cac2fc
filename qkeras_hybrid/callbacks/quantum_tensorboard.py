"""QuantumTensorBoard: circuits, quantum weights and gradient health in TensorBoard."""

import contextlib
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from qkeras_hybrid.callbacks.circuit_summary import layer_markdown

RUN_NAME = "quantum"


def _is_quantum_layer(layer):
    # Duck-typed, so every layer kind that carries a circuit and its weights
    # (QuantumLayer and any sibling class) is covered without importing it.
    return getattr(layer, "circuit", None) is not None and isinstance(layer, keras.layers.Layer)


def find_quantum_layers(model):
    """Every quantum layer inside `model`, nested models and sublayers included.

    Args:
      model: a Keras layer or model.

    Returns:
      A list of the layers that carry a `circuit`, in depth-first order, each
      once.
    """
    if hasattr(model, "_flatten_layers"):
        layers = model._flatten_layers(include_self=True, recursive=True)
    else:  # pragma: no cover - every Keras 3 layer has _flatten_layers
        layers, stack, seen = [], [model], set()
        while stack:
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            layers.append(layer)
            stack.extend(reversed(getattr(layer, "layers", [])))
    return [layer for layer in layers if _is_quantum_layer(layer)]


def _unique_tags(layers):
    """Layer names as tag prefixes; a repeated name (in nested models) gets `_1`, `_2`..."""
    tags, used = [], set()
    for layer in layers:
        tag, i = layer.name, 0
        while tag in used:
            i += 1
            tag = f"{layer.name}_{i}"
        used.add(tag)
        tags.append(tag)
    return tags


def _unpack_gradient_data(gradient_data):
    if gradient_data is None:
        return None
    if isinstance(gradient_data, tf.data.Dataset):
        gradient_data = next(iter(gradient_data))
    if not isinstance(gradient_data, (tuple, list)) or len(gradient_data) not in (2, 3):
        raise ValueError(
            "gradient_data must be a tuple (x, y) or (x, y, sample_weight), or a tf.data.Dataset "
            f"whose first element is one; received {type(gradient_data).__name__}"
            + (f" of length {len(gradient_data)}" if isinstance(gradient_data, (tuple, list)) else "")
        )
    return keras.utils.unpack_x_y_sample_weight(tuple(gradient_data))


class QuantumTensorBoard(keras.callbacks.Callback):
    """TensorBoard logging for the quantum layers of a model.

    Use it next to `keras.callbacks.TensorBoard`, with the same `log_dir`. It
    finds every quantum layer of the model (any layer with a `circuit`,
    including those inside nested models) and writes, into the run
    `<log_dir>/quantum` (shown in TensorBoard beside Keras's `train` and
    `validation` runs):

    - once, at the start of training: the circuit diagram with its qubits,
      input symbols, weight symbols and observables, as the text summary
      `<layer>/circuit` (the diagram sits in a Markdown code block, so it is
      monospaced in the Text tab);
    - every `histogram_freq` epochs: a histogram of the layer's
      `quantum_weights` (`<layer>/quantum_weights`) and of their gradient
      (`<layer>/quantum_gradients`);
    - every epoch: the L2 norm and the variance (over the layer's weights) of
      the gradient of the training loss with respect to the layer's
      `quantum_weights`, as the scalars `<layer>/grad_norm` and
      `<layer>/grad_variance`. A norm and a variance that shrink towards zero
      as qubits and layers are added are the signature of a barren plateau.

    All summaries of an epoch use the epoch index as step, like Keras's
    `epoch_loss`. Writing to a run of its own, rather than into `train`, keeps
    two writers from appending to one directory, which TensorBoard does not
    reload reliably.

    Keras callbacks do not see the batches, so the gradient is computed on a
    fixed batch given as `gradient_data`, after each epoch, with the model's
    own loss (`model.compute_loss`, regularization losses included) and
    `training=True`. The computation runs in a `keras.StatelessScope`: layer
    state updates it causes (batch-norm statistics, seed generators, metrics)
    are discarded, so monitoring never changes training. Without
    `gradient_data`, the gradient statistics are skipped with one warning.

    The values logged are also kept in `history`, a dict from tag (such as
    `"quantum_layer_2q/grad_norm"`) to the list of values, one per epoch. They
    are deliberately not added to the epoch `logs`: there, whether they reach
    other callbacks would depend on the order of the callbacks, and
    `keras.callbacks.TensorBoard` would log them a second time.

    Args:
      log_dir: the TensorBoard log directory (the same as Keras's
        `TensorBoard(log_dir=...)`); summaries go to `<log_dir>/quantum`.
      gradient_data: a batch `(x, y)` or `(x, y, sample_weight)` on which to
        compute the gradient statistics, or a `tf.data.Dataset` whose first
        element is taken as that batch. Keep it small: it is one extra
        forward and backward pass per epoch. `None` skips the gradient
        statistics.
      histogram_freq: how often, in epochs, to write the histograms; 0
        disables them. The gradient scalars are written every epoch.
      write_circuits: whether to write the circuit text summaries.

    Example:

    >>> import os, tempfile, cirq, sympy, keras, numpy as np
    >>> from qkeras_hybrid.layers import QuantumLayer
    >>> q = cirq.LineQubit.range(2)
    >>> x0, x1, w0, w1 = sympy.symbols("x0 x1 w0 w1")
    >>> circuit = cirq.Circuit(cirq.ry(x0)(q[0]), cirq.ry(x1)(q[1]),
    ...                        cirq.ry(w0)(q[0]), cirq.ry(w1)(q[1]),
    ...                        cirq.CNOT(q[0], q[1]))
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(2),
    ...     QuantumLayer(circuit, [cirq.Z(q[0]), cirq.Z(q[1])],
    ...                  input_symbols=[x0, x1], name="vqc"),
    ...     keras.layers.Dense(1)])
    >>> model.compile("adam", "mse")
    >>> x, y = np.random.rand(32, 4), np.random.rand(32, 1)
    >>> log_dir = tempfile.mkdtemp()
    >>> callbacks = [
    ...     keras.callbacks.TensorBoard(log_dir),
    ...     QuantumTensorBoard(log_dir, gradient_data=(x[:16], y[:16]))]
    >>> history = model.fit(x, y, epochs=2, callbacks=callbacks, verbose=0)
    >>> sorted(os.listdir(log_dir))
    ['quantum', 'train']
    >>> len(callbacks[1].history["vqc/grad_norm"])
    2
    """

    def __init__(self, log_dir, gradient_data=None, histogram_freq=1, write_circuits=True):
        super().__init__()
        is_int = isinstance(histogram_freq, (int, np.integer)) and not isinstance(histogram_freq, bool)
        if not is_int or histogram_freq < 0:
            raise ValueError(f"histogram_freq must be an integer >= 0, received {histogram_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.gradient_data = gradient_data
        self.histogram_freq = int(histogram_freq)
        self.write_circuits = bool(write_circuits)
        self.history = {}
        self._gradient_batch = _unpack_gradient_data(gradient_data)
        self._writer = None
        self._circuits_written = set()
        self._warned = set()

    @property
    def run_dir(self):
        """The directory this callback writes to: `<log_dir>/quantum`."""
        return os.path.join(self.log_dir, RUN_NAME)

    # ------------------------------------------------------------- callbacks

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.run_dir)
        layers = self._quantum_layers()
        if not layers:
            self._warn_once("no_layers", "QuantumTensorBoard: the model has no quantum layer; nothing to log.")
            return
        if self.write_circuits:
            with self._writing(step=0):
                for tag, layer in layers:
                    if id(layer) not in self._circuits_written:
                        tf.summary.text(f"{tag}/circuit", layer_markdown(layer))
                        self._circuits_written.add(id(layer))
            self._writer.flush()

    def on_epoch_end(self, epoch, logs=None):
        # A layer without weights (only input symbols) has its circuit logged
        # at train begin but no weights or gradients to show.
        layers = [
            (tag, layer)
            for tag, layer in self._quantum_layers()
            if self._is_built(tag, layer) and int(np.prod(layer.quantum_weights.shape)) > 0
        ]
        if not layers or self._writer is None:
            return
        histograms = self.histogram_freq and epoch % self.histogram_freq == 0
        gradients = self._gradients([layer for _, layer in layers])
        with self._writing(step=epoch):
            for tag, layer in layers:
                if histograms:
                    tf.summary.histogram(f"{tag}/quantum_weights", layer.quantum_weights)
                grad = gradients.get(id(layer)) if gradients else None
                if grad is None:
                    continue
                if histograms:
                    tf.summary.histogram(f"{tag}/quantum_gradients", grad)
                stats = {
                    "grad_norm": float(np.linalg.norm(grad)),
                    "grad_variance": float(np.var(grad)) if grad.size else 0.0,
                }
                for name, value in stats.items():
                    tf.summary.scalar(f"{tag}/{name}", value)
                    self.history.setdefault(f"{tag}/{name}", []).append(value)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # --------------------------------------------------------------- helpers

    def _quantum_layers(self):
        layers = find_quantum_layers(self.model)
        return list(zip(_unique_tags(layers), layers))

    def _is_built(self, tag, layer):
        if getattr(layer, "quantum_weights", None) is not None:
            return True
        self._warn_once(f"unbuilt/{tag}", f"QuantumTensorBoard: layer {tag} is not built; skipped.")
        return False

    def _writing(self, step):
        stack = contextlib.ExitStack()
        stack.enter_context(self._writer.as_default(step=step))
        # keras.callbacks.TensorBoard may hold a record_if condition of its
        # own for the whole of training; these summaries are always wanted.
        stack.enter_context(tf.summary.record_if(True))
        return stack

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=3)

    def _gradients(self, layers):
        """{id(layer): gradient of the loss w.r.t. its quantum_weights, as numpy}."""
        if self._gradient_batch is None:
            self._warn_once(
                "no_data",
                "QuantumTensorBoard: no gradient_data given, so gradient norms and variances are not "
                "logged. Pass gradient_data=(x, y), a small fixed batch, to log them.",
            )
            return {}
        x, y, sample_weight = self._gradient_batch
        model = self.model
        # Every trainable variable, plus quantum weights that are frozen: the
        # gradient w.r.t. those is still worth watching.
        variables, seen = [], set()
        for v in list(model.trainable_variables) + [layer.quantum_weights for layer in layers]:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
        with tf.GradientTape() as tape:
            values = [tf.convert_to_tensor(v.value) for v in variables]
            tape.watch(values)
            # The stateless scope reads the variables through `values` and
            # swallows every assignment, so this pass leaves the model as is.
            with keras.StatelessScope(state_mapping=list(zip(variables, values)), collect_losses=True):
                y_pred = model(x, training=True)
                if hasattr(model, "_compute_loss"):  # handles compute_loss overrides without `training`
                    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
                else:
                    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        position = {id(v): i for i, v in enumerate(variables)}
        targets = [values[position[id(layer.quantum_weights)]] for layer in layers]
        grads = tape.gradient(loss, targets)
        result = {}
        for layer, grad in zip(layers, grads):
            if grad is None:
                self._warn_once(
                    f"nograd/{layer.name}",
                    f"QuantumTensorBoard: the loss does not depend on the weights of {layer.name}; "
                    "no gradient statistics for it.",
                )
                continue
            result[id(layer)] = np.asarray(tf.convert_to_tensor(grad), dtype=np.float64).reshape(-1)
        return result
