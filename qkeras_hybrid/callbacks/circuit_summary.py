"""Markdown summaries of a quantum layer's circuit, for TensorBoard's text tab."""


def _is_qiskit(circuit):
    return type(circuit).__module__.startswith("qiskit")


def circuit_diagram(circuit):
    """The circuit as a plain-text diagram (Cirq's or Qiskit's text drawer)."""
    if _is_qiskit(circuit):
        # output="text" explicitly: a user config may default draw() to "mpl".
        return str(circuit.draw(output="text", fold=-1))
    if hasattr(circuit, "to_text_diagram"):
        return circuit.to_text_diagram()
    return str(circuit)


def _code_block(text):
    # A fence longer than any backtick run inside, so the block cannot end early.
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text}\n{fence}"


def _inline(items):
    return ", ".join(f"`{item}`" for item in items) if items else "(none)"


def layer_markdown(layer):
    """Markdown for one quantum layer: the diagram in a code block, then facts.

    TensorBoard renders text summaries as Markdown; the fenced code block keeps
    the diagram monospaced and its box-drawing characters aligned.
    """
    circuit = layer.circuit
    qubits = getattr(getattr(layer, "compiled", None), "qubits", None)
    if qubits is None and _is_qiskit(circuit):
        qubits = [f"q[{i}]" for i in range(circuit.num_qubits)]
    input_symbols = list(getattr(layer, "input_symbols", []))
    weight_symbols = list(getattr(layer, "weight_symbols", []))
    observables = [" ".join(str(o).split()) for o in getattr(layer, "observables", [])]
    lines = [
        f"**{layer.name}**: {layer.num_qubits} qubits, {len(input_symbols)} input symbols, "
        f"{len(weight_symbols)} weight symbols, {len(observables)} observables",
        "",
        _code_block(circuit_diagram(circuit)),
        "",
        f"- qubits (register order): {_inline([str(q) for q in qubits] if qubits else [])}",
        f"- input symbols (input columns): {_inline(input_symbols)}",
        f"- weight symbols (`quantum_weights[i]`): {_inline(weight_symbols)}",
        f"- observables (output columns): {_inline(observables)}",
    ]
    return "\n".join(lines)
