"""Noise specifications: what noise a layer's circuit runs with.

`resolve(noise)` turns any accepted form (a `cirq.NoiseModel`, a per-gate
table, a `qiskit_aer.noise.NoiseModel`, a config dict) into a `NoiseSpec`,
which inserts channels into Cirq or Qiskit circuits and gives readout flip
probabilities per qubit.
"""

import dataclasses
from typing import Optional, Tuple, Union

import cirq

from qkeras_hybrid.noise import gate_kinds
from qkeras_hybrid.noise.channels import as_channel, channel_from_config, channel_to_config, cirq_from_config
from qkeras_hybrid.noise.channels import cirq_to_config, is_qiskit_object, to_qiskit_instruction
from qkeras_hybrid.noise.readout import Readout, check_qubit_key, qubit_from_config, qubit_to_config


class NoiseSpec:
    """Base class: channels to insert into circuits, and readout errors.

    Subclasses: `CirqNoise` (a `cirq.NoiseModel`) and `GateNoise` (a channel
    after each gate of given kinds; Qiskit noise models convert to it).
    """

    readout: Readout

    @property
    def has_channels(self):
        """Whether `apply_cirq` / `apply_qiskit` may insert channels."""
        raise NotImplementedError

    def apply_cirq(self, circuit, qubits=None):
        """`circuit` (a `cirq.Circuit`) with this noise's channels inserted.

        Args:
          circuit: the `cirq.Circuit`.
          qubits: the register order; integer qubits in the noise spec are
            indices into it. Defaults to `sorted(circuit.all_qubits())`, the
            compiler's default register.
        """
        raise NotImplementedError

    def apply_qiskit(self, circuit):
        """`circuit` (a `qiskit.QuantumCircuit`) with this noise's channels inserted."""
        raise NotImplementedError

    def apply(self, circuit, qubits=None):
        """`apply_cirq` or `apply_qiskit`, by the circuit's type."""
        if isinstance(circuit, cirq.Circuit):
            return self.apply_cirq(circuit, qubits)
        if is_qiskit_object(circuit):
            return self.apply_qiskit(circuit)
        raise TypeError(f"circuit must be a cirq.Circuit or a qiskit.QuantumCircuit, got {type(circuit).__name__}")

    def readout_error(self, qubit_order):
        """float64 `[n, 2]` of (P(read 1 | 0), P(read 0 | 1)) per qubit, or None without readout errors.

        Args:
          qubit_order: the register: a list of cirq qubits, a list of
            indices, or the qubit count n (Qiskit: qubit i is index i).
        """
        return self.readout.array(qubit_order)

    def get_config(self):
        """A JSON-able dict; `NoiseSpec.from_config` (or `resolve`) rebuilds the spec."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        kind = config.get("class_name")
        if kind not in _SPEC_CLASSES:
            raise ValueError(
                f"Not a noise config: class_name must be one of {sorted(_SPEC_CLASSES)}, got {kind!r}"
            )
        return _SPEC_CLASSES[kind]._from_config(config)

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, NoiseSpec):
            return False
        try:
            return self.get_config() == other.get_config()
        except ValueError:  # not serializable: only equal to itself
            return False

    __hash__ = None


class CirqNoise(NoiseSpec):
    """A `cirq.NoiseModel`, applied exactly as `circuit.with_noise(model)`.

    Args:
      model: a `cirq.NoiseModel`, or anything `cirq.NoiseModel.from_noise_model_like`
        takes (a single-qubit channel such as `cirq.depolarize(0.01)` means
        that channel on every qubit after every moment).
      readout: readout errors, see `GateNoise`.

    Example:

    >>> import cirq
    >>> spec = CirqNoise(cirq.ConstantQubitNoiseModel(cirq.depolarize(0.01)))
    >>> q = cirq.LineQubit(0)
    >>> len(spec.apply_cirq(cirq.Circuit(cirq.H(q))))
    2
    """

    def __init__(self, model, readout=None):
        if not isinstance(model, cirq.NoiseModel):
            try:
                model = cirq.NoiseModel.from_noise_model_like(model)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"CirqNoise needs a cirq.NoiseModel or a single-qubit cirq channel, got {model!r} ({e})"
                ) from e
        self.model = model
        self.readout = readout if isinstance(readout, Readout) else Readout(readout)

    @property
    def has_channels(self):
        return self.model is not cirq.NO_NOISE

    def apply_cirq(self, circuit, qubits=None):
        del qubits  # with_noise puts noise on the circuit's own qubits
        return circuit.with_noise(self.model)

    def apply_qiskit(self, circuit):
        raise TypeError(
            f"A cirq.NoiseModel ({self.model!r}) applies to Cirq circuits only; for a Qiskit circuit give a "
            "per-gate table (GateNoise) or a qiskit_aer.noise.NoiseModel"
        )

    def get_config(self):
        return {
            "class_name": "CirqNoise",
            "model": cirq_to_config(self.model, "Cirq noise model"),
            "readout": self.readout.get_config(),
        }

    @classmethod
    def _from_config(cls, config):
        return cls(cirq_from_config(config["model"]), Readout.from_config(config.get("readout")))

    def __repr__(self):
        return f"CirqNoise({self.model!r}, readout={self.readout!r})"


@dataclasses.dataclass(frozen=True)
class NoiseRule:
    """One entry of a `GateNoise` table: `channel` after each gate of kind `gate`.

    Attributes:
      gate: a canonical gate name (`"cx"`, `"ry"`, ...) or a `cirq.GateFamily`.
      channel: a cirq channel gate on as many qubits as the gate.
      qubits: None (every gate of the kind, within `GateNoise.qubits`), or the
        exact qubits (register indices or cirq qubits, in the gate's order)
        of the gates it applies to. A rule with qubits overrides the rules
        without for those gates (Qiskit Aer's local vs all-qubit errors).
    """

    gate: Union[str, cirq.GateFamily]
    channel: cirq.Gate
    qubits: Optional[Tuple] = None


def _gate_key(key, where):
    if isinstance(key, str):
        return gate_kinds.canonical_name(key, where)
    if isinstance(key, cirq.GateFamily):
        return key
    if isinstance(key, type) and issubclass(key, cirq.Gate):
        return cirq.GateFamily(key)
    if isinstance(key, cirq.Gate):
        return cirq.GateFamily(key, ignore_global_phase=False)
    raise TypeError(
        f"{where}: a gate kind must be a name (e.g. 'cx'), a cirq gate type, a cirq gate or a cirq.GateFamily, "
        f"got {key!r}"
    )


def _describe_kind(kind):
    return repr(kind) if isinstance(kind, str) else str(kind.name if hasattr(kind, "name") else kind)


def _qubit_tuple(value, where):
    items = value if isinstance(value, (tuple, list)) else (value,)
    return tuple(check_qubit_key(q, where) for q in items)


class GateNoise(NoiseSpec):
    """A channel after each gate of given kinds, as VQNet's noise configuration and Qiskit Aer do.

    Args:
      gates: a dict `{kind: channel}` or `{kind: {qubits: channel}}`, or a
        list of `NoiseRule`s.
        kind: a gate name, case-insensitive: Qiskit instruction names
        (`"rx"`, `"ry"`, `"rz"`, `"x"`, `"sx"`, `"h"`, `"cx"` (alias
        `"cnot"`), `"cz"`, `"swap"`, `"ccx"`, `"measure"`, `"reset"`, ...)
        match Qiskit instructions of that name and the Cirq gates that are
        those gates (`cirq.CNOT` is `"cx"`, `cirq.rx(t)` is `"rx"`,
        `cirq.X**0.5` is `"sx"`); Cirq family names (`"xpow"`, `"zpow"`,
        `"cxpow"`, `"czpow"`, `"iswappow"`, `"xxpow"`, `"fsim"`,
        `"phasedx"`, `"matrix"`, ...) match every gate of that Cirq type
        (`"xpow"`: `cirq.X**t` and `cirq.rx(t)` alike). For other Cirq gates,
        the key can be a gate type, a gate or a `cirq.GateFamily`.
        channel: a cirq channel gate on as many qubits as the gate
        (`cirq.depolarize(0.01)`, `cirq.depolarize(0.02, n_qubits=2)`,
        `cirq.amplitude_damp(0.1)`, `cirq.KrausChannel(...)`, ...), or a
        `qiskit_aer.noise.QuantumError` / `qiskit.quantum_info` channel. For
        a 2-qubit gate the channel's qubits are the gate's, in order.
        `{qubits: channel}`: only on the gates acting on exactly those
        qubits (a tuple, or one qubit).
        A channel follows its gate; on a measurement it comes before it
        (as in Qiskit Aer). Multi-qubit Cirq measurements and identities get
        a 1-qubit channel on each of their qubits.
      qubits: None (every qubit) or the qubits whose gates get the channels
        given without qubits: a gate gets them when all its qubits are in
        this list. Qubits are register indices (the Qiskit index, or the
        position in the layer's qubit order for Cirq) or cirq qubits.
      readout: readout errors applied to every measured bit: a flip
        probability p, a pair `(P(read 1 | 0), P(read 0 | 1))` or a 1-qubit
        Qiskit `ReadoutError` for every qubit, a list of pairs (one per
        qubit), or a dict `{qubit: pair | p | ReadoutError}`.

    Example:

    >>> import cirq
    >>> noise = GateNoise({"ry": cirq.depolarize(0.01), "cx": cirq.depolarize(0.02, n_qubits=2)},
    ...                   readout=(0.02, 0.05))
    >>> a, b = cirq.LineQubit.range(2)
    >>> print(noise.apply_cirq(cirq.Circuit(cirq.ry(0.3)(a), cirq.CNOT(a, b))))
    0: ───Ry(0.095π)───D(0.01)[<virtual>]───@───D(0.02)[<virtual>]───
                                            │   │
    1: ─────────────────────────────────────X───#2───────────────────
    >>> noise.readout_error([a, b]).tolist()
    [[0.02, 0.05], [0.02, 0.05]]
    """

    def __init__(self, gates=None, qubits=None, readout=None, _strict_names=True):
        self.rules = tuple(self._parse_rules(gates if gates is not None else {}, _strict_names))
        self.qubits = None if qubits is None else _qubit_tuple(qubits, "GateNoise qubits")
        self.readout = readout if isinstance(readout, Readout) else Readout(readout)

    @staticmethod
    def _parse_rules(gates, strict):
        if isinstance(gates, dict):
            items = []
            for key, value in gates.items():
                if isinstance(value, dict):
                    items += [NoiseRule(key, ch, q) for q, ch in value.items()]
                else:
                    items.append(NoiseRule(key, value))
        else:
            items = [r if isinstance(r, NoiseRule) else NoiseRule(*r) for r in gates]
        rules = []
        for rule in items:
            where = f"Noise for gate {rule.gate!r}" + (f" on qubits {rule.qubits}" if rule.qubits is not None else "")
            if isinstance(rule.gate, str) and not strict:
                kind = gate_kinds.ALIASES.get(rule.gate.lower(), rule.gate.lower())
            else:
                kind = _gate_key(rule.gate, where)
            channel = as_channel(rule.channel, where)
            width = cirq.num_qubits(channel)
            expected = gate_kinds.arity(kind) if isinstance(kind, str) else None
            if expected is not None and width != expected:
                raise ValueError(
                    f"{where}: the channel {channel!r} acts on {width} qubit(s), but {kind!r} gates act on "
                    f"{expected}; give a {expected}-qubit channel (e.g. cirq.depolarize(p, n_qubits={expected}))"
                )
            qubits = None
            if rule.qubits is not None:
                qubits = _qubit_tuple(rule.qubits, where)
                if len(qubits) != width:
                    raise ValueError(
                        f"{where}: {len(qubits)} qubits given for a channel on {width} qubit(s) ({channel!r})"
                    )
            rules.append(NoiseRule(kind, channel, qubits))
        return rules

    @property
    def has_channels(self):
        return bool(self.rules)

    def _by_kind(self):
        groups = {}
        for rule in self.rules:
            groups.setdefault(rule.gate, []).append(rule)
        return groups

    def _select(self, groups, matches, piece, norm):
        """The rules for one gate (its qubits `piece`, normalized by `norm`)."""
        allowed = None if self.qubits is None else {norm(q) for q in self.qubits}
        chosen = []
        for kind, rules in groups.items():
            if not matches(kind):
                continue
            local = [r for r in rules if r.qubits is not None and tuple(norm(q) for q in r.qubits) == piece]
            if local:
                chosen += local
            elif allowed is None or all(q in allowed for q in piece):
                chosen += [r for r in rules if r.qubits is None]
        return chosen

    @staticmethod
    def _check_width(rule, piece, what):
        if cirq.num_qubits(rule.channel) != len(piece):
            raise ValueError(
                f"Noise for gate {_describe_kind(rule.gate)}: the channel {rule.channel!r} acts on "
                f"{cirq.num_qubits(rule.channel)} qubit(s), but it matched {what}, which acts on {len(piece)}"
            )

    def apply_cirq(self, circuit, qubits=None):
        circuit = cirq.unroll_circuit_op(circuit, deep=True, tags_to_check=None)
        register = list(qubits) if qubits is not None else sorted(circuit.all_qubits())

        def norm(q):
            if isinstance(q, int):
                return register[q] if q < len(register) else ("index", q)
            return q

        groups = self._by_kind()
        out = []
        for moment in circuit:
            before, after = [], []
            for op in moment:
                if cirq.VirtualTag() in op.tags or op.gate is None:
                    continue
                per_qubit = isinstance(op.gate, (cirq.MeasurementGate, cirq.IdentityGate))
                pieces = [(q,) for q in op.qubits] if per_qubit and len(op.qubits) > 1 else [tuple(op.qubits)]
                for piece in pieces:
                    for rule in self._select(groups, lambda k: gate_kinds.cirq_matches(k, op.gate), piece, norm):
                        self._check_width(rule, piece, f"{op!r}")
                        noisy = rule.channel.on(*piece).with_tags(cirq.VirtualTag())
                        before_op = rule.gate in gate_kinds.BEFORE_KINDS or cirq.is_measurement(op)
                        (before if before_op else after).append(noisy)
            out += cirq.Circuit(before).moments + [moment] + cirq.Circuit(after).moments
        return cirq.Circuit(out)

    def apply_qiskit(self, circuit):
        for rule in self.rules:
            if not isinstance(rule.gate, str):
                raise ValueError(
                    f"Noise for gate {_describe_kind(rule.gate)} names a Cirq gate family, which matches no Qiskit "
                    "instruction: name the Qiskit instruction instead (e.g. 'cx')"
                )
            for q in (rule.qubits or ()) + (self.qubits or ()):
                if not isinstance(q, int):
                    raise ValueError(
                        f"Noise for gate {rule.gate!r} names cirq qubit {q!r}; a Qiskit circuit's qubits are "
                        "given by index"
                    )
        groups = self._by_kind()
        instructions = {}
        out = circuit.copy_empty_like()
        for inst in circuit.data:
            name = inst.operation.name
            # Aer looks a gate's errors up by its label when it has one.
            key = getattr(inst.operation, "label", None) or name
            indices = tuple(circuit.find_bit(q).index for q in inst.qubits)
            per_qubit = name in gate_kinds.PER_QUBIT_KINDS and len(indices) > 1
            pieces = [(i,) for i in indices] if per_qubit else [indices]
            before, after = [], []
            for piece in pieces:
                for rule in self._select(groups, lambda k: k == key, piece, lambda q: q):
                    self._check_width(rule, piece, f"Qiskit instruction {name!r} on qubits {list(piece)}")
                    key = id(rule)
                    if key not in instructions:
                        instructions[key] = to_qiskit_instruction(rule.channel)
                    (before if name in gate_kinds.BEFORE_KINDS else after).append((instructions[key], piece))
            for instruction, piece in before:
                out.append(instruction, [out.qubits[i] for i in piece])
            out.append(inst)
            for instruction, piece in after:
                out.append(instruction, [out.qubits[i] for i in piece])
        return out

    def get_config(self):
        rules = []
        for rule in self.rules:
            gate = rule.gate if isinstance(rule.gate, str) else {"cirq": cirq_to_config(rule.gate, "Gate family")}
            rules.append({
                "gate": gate,
                "qubits": None if rule.qubits is None else [qubit_to_config(q) for q in rule.qubits],
                "channel": channel_to_config(rule.channel, f"Channel for gate {_describe_kind(rule.gate)}"),
            })
        return {
            "class_name": "GateNoise",
            "rules": rules,
            "qubits": None if self.qubits is None else [qubit_to_config(q) for q in self.qubits],
            "readout": self.readout.get_config(),
        }

    @classmethod
    def _from_config(cls, config):
        rules = []
        for r in config["rules"]:
            gate = r["gate"] if isinstance(r["gate"], str) else cirq_from_config(r["gate"]["cirq"])
            qubits = None if r["qubits"] is None else tuple(qubit_from_config(q) for q in r["qubits"])
            rules.append(NoiseRule(gate, channel_from_config(r["channel"]), qubits))
        qubits = config.get("qubits")
        qubits = None if qubits is None else [qubit_from_config(q) for q in qubits]
        return cls(rules, qubits, Readout.from_config(config.get("readout")), _strict_names=False)

    def __repr__(self):
        return f"GateNoise(rules={list(self.rules)!r}, qubits={self.qubits!r}, readout={self.readout!r})"


_SPEC_CLASSES = {"CirqNoise": CirqNoise, "GateNoise": GateNoise}
_TABLE_KEYS = {"gates", "qubits", "readout"}


def resolve(noise, num_qubits=None):
    """A `NoiseSpec` for any accepted form of noise, or None for no noise.

    Args:
      noise: one of
        - None: no noise;
        - a `NoiseSpec` (returned as is);
        - a `cirq.NoiseModel`, e.g. `cirq.ConstantQubitNoiseModel(cirq.depolarize(0.01))`,
          or a single-qubit cirq channel (`cirq.depolarize(0.01)`: that channel
          on every qubit after every moment): applied as `circuit.with_noise(model)`;
        - a per-gate table, see `GateNoise`: `{"ry": cirq.depolarize(0.01), "cx": ...}`, or
          `{"gates": {...}, "qubits": [...], "readout": ...}`;
        - a `qiskit_aer.noise.NoiseModel` (e.g. `NoiseModel.from_backend(backend)`),
          converted to a `GateNoise` with Aer's semantics;
        - a config dict from `NoiseSpec.get_config()`.
      num_qubits: the register size of the circuits the noise will apply to,
        if known: a Qiskit noise model then keeps only the errors on qubits
        below it (the others can match nothing; a device has many).

    Returns:
      A `NoiseSpec`, or None.
    """
    if noise is None or isinstance(noise, NoiseSpec):
        return noise
    if isinstance(noise, cirq.NoiseModel) or isinstance(noise, cirq.Gate):
        return CirqNoise(noise)
    if isinstance(noise, dict):
        if "class_name" in noise:
            return NoiseSpec.from_config(noise)
        if noise and set(noise) <= _TABLE_KEYS:
            return GateNoise(**noise)
        return GateNoise(noise)
    if type(noise).__module__.startswith("qiskit_aer") and type(noise).__name__ == "NoiseModel":
        from qkeras_hybrid.noise.qiskit_noise import from_qiskit_noise_model

        return from_qiskit_noise_model(noise, num_qubits)
    raise TypeError(
        "noise must be None, a cirq.NoiseModel (or a single-qubit cirq channel), a per-gate dict such as "
        "{'ry': cirq.depolarize(0.01)}, a qkeras_hybrid.noise.NoiseSpec, a qiskit_aer.noise.NoiseModel or a "
        f"noise config dict; got {type(noise).__name__}: {noise!r}"
    )
