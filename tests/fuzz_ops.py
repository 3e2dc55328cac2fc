"""A seeded, time-bounded mutation fuzzer of the native op's raw ops.

Every case starts from a program that our own compiler built from a random
Cirq or Qiskit circuit (tests/conftest.py's generators), with valid angles,
initial states and upstream gradients, then mutates zero to four of its
tensors: values (interesting integers, bit flips, NaN, inf, huge and tiny
floats), ranks, shapes (rows dropped or added, a zero dimension, a huge
dimension of an empty tensor), dtypes, batch sizes, and qubit counts up to
2**31 - 1; or passes a numpy array, a Python list or None instead of a
tensor. Each case calls one of the six raw ops, or the forward ops under a
GradientTape (their registered gradients), in float32 or float64, eagerly,
in a tf.function with unknown shapes, or in a tf.function capturing the
inputs (static shapes).

A clean outcome is a result, a tf.errors.OpError, a TypeError or a
ValueError. Anything else fails the run: another exception type, a signal
(abort, segfault, a sanitizer's report) or a hang. The cases run in chunks,
each in a child process, so that a crash is caught; the case that crashed
(and the one before it) is then regenerated from its seed and saved as a
repro file.

Run it:

    python tests/fuzz_ops.py --seconds 600 [--seed S] [--repro-dir fuzz_repros]
    python tests/fuzz_ops.py --replay fuzz_repros/crash-....pkl   # in this process

(`make fuzz SECONDS=N` runs the first; tests/test_fuzz.py runs about two
minutes of it in `make test`.) The environment passes to the children, so
QKERAS_HYBRID_OP_LIBRARY and LD_PRELOAD select a sanitized build
(`make sanitize`).
"""

import argparse
import json
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PROGRAM = ["num_qubits", "block_meta", "gate_meta", "gate_data", "pauli_masks", "pauli_coeffs"]
# op name -> its inputs after the program (the tape variants take the
# forward op's inputs and differentiate them with the registered gradient).
OPS = {
    "expectation": ["angles"],
    "expectation_adjoint_grad": ["angles", "upstream"],
    "expectation_from_state": ["initial_state", "angles"],
    "expectation_from_state_adjoint_grad": ["initial_state", "angles", "upstream"],
    "expectation_and_state": ["angles"],
    "expectation_adjoint_grad_from_final_state": ["angles", "final_state", "upstream"],
    "tape_expectation": ["angles"],
    "tape_expectation_from_state": ["initial_state", "angles"],
    "tape_expectation_and_state": ["angles"],
    "tape_expectation_and_state_both": ["angles"],  # a loss of both outputs
    # The density-matrix ops (qkeras_hybrid.ops.density) run density programs.
    "density_expectation": ["angles"],
    "density_expectation_adjoint_grad": ["angles", "upstream"],
    "density_probabilities": ["angles", "qubits"],
    "density_probabilities_adjoint_grad": ["angles", "qubits", "upstream"],
    "density_sample": ["angles", "qubits", "shots", "seed", "readout"],
    "density_sampled_expectation": ["angles", "shots", "seed", "readout"],
    "tape_density_expectation": ["angles"],
    "tape_density_probabilities": ["angles", "qubits"],
}
MODES = ["eager", "graph", "capture"]  # capture: a new tf.function closing over the inputs
MODE_WEIGHTS = [0.55, 0.35, 0.10]
# Faults to inject, for the fuzzer's own test: "chunk:index:kind,..." with
# kind abort, hang or exception.
INJECT_ENV = "QKH_FUZZ_INJECT"

INT_VALUES = [0, 1, -1, 2, 3, 4, 7, 8, 9, 62, 63, 64, 255, 2**15, 2**31 - 1, -(2**31), 2**30]
INT64_VALUES = [2**32, 2**40, 2**62, 2**63 - 1, -(2**63), 2**61 + 1]
FLOAT_VALUES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 3.5e38, -3.5e38, 1e38,
                1e20, 1e-320, 5e-324, 1.7976931348623157e308, 2.0**53, 1e6]
NUM_QUBITS_VALUES = [0, -1, 1, 2, 13, 14, 15, 20, 40, 47, 59, 60, 61, 62, 63, 64, 2**31 - 1, -(2**31)]
# Dimensions of empty tensors: huge, but no memory. A batch dimension only
# takes those no output of that many rows fits in memory: an empty [2**31, 0]
# angles tensor of a program without angles validly asks for 2**31
# simulations and an output of 8 GiB or more.
HUGE_DIMS = [2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1]
HUGE_BATCHES = [2**40, 2**47, 2**62, 2**63 - 1]
BATCHED = ("initial_state", "angles", "final_state", "upstream")
BATCHES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64]
DTYPES = ["int8", "uint8", "int32", "int64", "float16", "float32", "float64", "bool", "complex64",
          "complex128", "str"]


# ------------------------------------------------------------------ programs


def build_pool(seed, chunk, size=10, noisy=6):
    """Compiled programs of random circuits (the chunk's starting points):
    `size` pure programs, then `noisy` programs of noisy circuits, each a
    density program or a trajectory program (Kraus selections)."""
    import sympy

    import cirq
    import qkeras_hybrid as qh
    from conftest import random_cirq_circuit, random_pauli_sum, random_qiskit_circuit, random_sparse_pauli_op

    rng = np.random.default_rng([seed, chunk, 7919])
    pool = []
    while len(pool) < size:
        n = int(rng.choice([1, 2, 3, 4, 5, 6, 8, 12, 15], p=[0.1, 0.15, 0.2, 0.15, 0.1, 0.1, 0.1, 0.05, 0.05]))
        fused = [None, 1, 2, 3][rng.integers(4)]
        try:
            if rng.random() < 0.7:
                symbols = sympy.symbols("a b c d")
                _, bare, qubits = random_cirq_circuit(rng, n, int(rng.integers(1, 3 * n + 4)), symbols,
                                                      measure=False)
                qubits = sorted(qubits)
                observables = [random_pauli_sum(rng, qubits) for _ in range(int(rng.integers(1, 4)))]
                used = sorted(cirq.parameter_symbols(bare), key=str)
                cc = qh.compile_circuit(bare, observables, symbols=used, qubits=qubits, max_fused_qubits=fused)
            else:
                from qiskit.circuit import Parameter

                params = [Parameter(p) for p in "abc"]
                qc = random_qiskit_circuit(rng, n, int(rng.integers(1, 3 * n + 4)), params, measure=False)
                observables = [random_sparse_pauli_op(rng, n) for _ in range(int(rng.integers(1, 4)))]
                cc = qh.compile_circuit(qc, observables, max_fused_qubits=fused)
        except ValueError:  # e.g. max_fused_qubits smaller than a gate
            continue
        program = dict(zip(PROGRAM, cc.program.as_tuple()))
        pool.append(dict(program=program, num_qubits=cc.num_qubits, num_angles=cc.num_angles,
                         num_observables=int(program["pauli_coeffs"].shape[0]), kind="pure",
                         physical_qubits=cc.num_qubits, selections=[]))
    pool.extend(_noisy_programs(rng, noisy))
    return pool


def _noisy_programs(rng, count):
    import sympy

    import cirq
    from conftest import random_pauli_sum
    from qkeras_hybrid.circuits import observables as obs_lib
    from qkeras_hybrid.circuits.angles import AngleMap
    from qkeras_hybrid.circuits.program import (build_program, density_primitives, trajectory_choices,
                                                trajectory_primitives)
    from test_density_ops import lower, noisy_circuit

    out = []
    while len(out) < count:
        n = int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.15, 0.2, 0.25, 0.2, 0.1, 0.1]))
        fused = [None, 1, 2, 3][rng.integers(4)]
        circuit, qubits = noisy_circuit(rng, n, int(rng.integers(1, 2 * n + 4)), int(rng.integers(1, 5)),
                                        sympy.symbols("a b c d"))
        used = sorted(cirq.parameter_symbols(circuit), key=str)
        index_of = {q: i for i, q in enumerate(qubits)}
        terms = [obs_lib.cirq_terms(random_pauli_sum(rng, qubits), index_of) for _ in range(int(rng.integers(1, 4)))]
        primitives = lower(circuit, qubits, used)
        try:
            if rng.random() < 0.6:
                kind, symbols = "density", used
                program = build_program(2 * n, density_primitives(primitives, n), terms, used, fused)
                selections, jumps = [], []
            else:
                kind = "pure"
                trajectory = trajectory_primitives(primitives, jumps=rng.random() < 0.3)
                choices = trajectory_choices(trajectory)
                symbols = used + [c.symbol for c in choices]
                program = build_program(n, trajectory, terms, symbols, fused)
                selections = [(len(used) + i, len(c.probabilities)) for i, c in enumerate(choices) if not c.jump]
                jumps = [len(used) + i for i, c in enumerate(choices) if c.jump]
        except ValueError:  # max_fused_qubits smaller than a gate
            continue
        arrays = dict(zip(PROGRAM, program.as_tuple()))
        out.append(dict(program=arrays, num_qubits=int(program.num_qubits),
                        num_angles=AngleMap(program.angle_exprs, symbols).num_angles,
                        num_observables=int(arrays["pauli_coeffs"].shape[0]), kind=kind, physical_qubits=n,
                        selections=selections, jumps=jumps))
    return out


# ------------------------------------------------------------------- cases


def _valid_inputs(rng, base, op, float_dtype):
    arrays = {k: np.array(v) for k, v in base["program"].items()}
    batch = int(rng.choice(BATCHES))
    n, num_angles, num_obs = base["num_qubits"], base["num_angles"], base["num_observables"]
    scale = float(rng.choice([1.0, 4.0, 100.0]))
    arrays["angles"] = rng.uniform(-scale, scale, size=(batch, num_angles)).astype(float_dtype)
    for slot, count in base["selections"]:  # Kraus selections: an integer index
        arrays["angles"][:, slot] = rng.integers(0, count, size=batch)
    for slot in base.get("jumps", []):  # quantum jumps: a uniform draw
        arrays["angles"][:, slot] = rng.uniform(0, 1, size=batch)
    physical = base["physical_qubits"]
    if "qubits" in OPS[op]:
        k = int(rng.integers(1, physical + 1))
        arrays["qubits"] = rng.permutation(physical)[:k].astype(np.int32)
        if "upstream" in OPS[op]:
            num_obs = 2**k  # the upstream of probabilities
    if "shots" in OPS[op]:
        arrays["shots"] = np.array(int(rng.integers(1, 50)), np.int32)
        arrays["seed"] = rng.integers(-2**40, 2**40, size=2).astype(np.int64)
        arrays["readout"] = rng.uniform(0, 0.2, size=(physical, 2)) * (rng.random() < 0.7)
    for name in ("initial_state", "final_state"):  # any unit vectors: a final state need not be U|0>
        if name in OPS[op]:
            psi = rng.normal(size=(batch, 2, 2**n))
            norm = np.sqrt((psi**2).sum(axis=(1, 2), keepdims=True)) + 1e-12
            arrays[name] = (psi / norm).astype(float_dtype)
    if "upstream" in OPS[op]:
        arrays["upstream"] = rng.normal(size=(batch, num_obs)).astype(float_dtype)
    return arrays


def _interesting_value(rng, dtype):
    if dtype.kind in "iu":
        values = INT_VALUES + (INT64_VALUES if dtype.itemsize == 8 else [])
        value = values[rng.integers(len(values))] if rng.random() < 0.8 else int(rng.integers(-20, 20))
        info = np.iinfo(dtype)
        return int(np.clip(value, info.min, info.max))
    if dtype.kind == "f":
        return FLOAT_VALUES[rng.integers(len(FLOAT_VALUES))] if rng.random() < 0.8 else float(
            rng.normal() * 10.0 ** rng.integers(-5, 40))
    return None


def _mutate_values(rng, name, a):
    a = np.array(a)
    if a.size == 0 or a.dtype.kind not in "iuf":
        return a, "values: empty"
    flat = a.reshape(-1).copy()
    kind = rng.choice(["set", "bitflip", "scale", "fill"], p=[0.5, 0.2, 0.15, 0.15])
    if kind == "bitflip" and flat.dtype.kind in "iu" and name != "num_qubits":
        i = int(rng.integers(flat.size))
        bit = int(rng.integers(8 * flat.dtype.itemsize))
        view = flat.view(f"u{flat.dtype.itemsize}")
        view[i] ^= np.array(1, view.dtype) << np.array(bit, view.dtype)
        return flat.reshape(a.shape), f"bitflip [{i}] bit {bit}"
    if kind == "scale" and flat.dtype.kind == "f":
        factor = float(rng.choice([1e300, -1e38, 1e20, 1e-300, -1.0, 3.4e38]))
        with np.errstate(all="ignore"):
            return (flat * factor).astype(a.dtype).reshape(a.shape), f"scale x{factor:g}"
    if kind == "fill":
        value = _interesting_value(rng, flat.dtype)
        with np.errstate(all="ignore"):
            flat[:] = value
        return flat.reshape(a.shape), f"fill {value!r}"
    changes = []
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(flat.size))
        value = _interesting_value(rng, flat.dtype)
        with np.errstate(all="ignore"):
            flat[i] = value
        changes.append(f"[{i}]={value!r}")
    return flat.reshape(a.shape), "set " + " ".join(changes)


def _mutate_shape(rng, name, a):
    """Returns (array or ('zeros', shape, dtype), description)."""
    a = np.array(a)
    kind = rng.choice(["drop", "add", "zero_dim", "huge_empty", "rank_up", "rank_down", "transpose"])
    if a.ndim == 0 and kind in ("drop", "add", "zero_dim", "transpose", "huge_empty"):
        kind = "rank_up"
    if kind == "drop":
        axis = int(rng.integers(a.ndim))
        keep = int(rng.integers(a.shape[axis] + 1)) if a.shape[axis] else 0
        return np.take(a, np.arange(keep), axis=axis), f"axis {axis} cut to {keep}"
    if kind == "add":
        axis = int(rng.integers(a.ndim))
        extra = int(rng.integers(1, 4))
        shape = list(a.shape)
        shape[axis] = extra
        if a.size and rng.random() < 0.5:
            rows = np.take(a, rng.integers(a.shape[axis], size=extra), axis=axis) if a.shape[axis] else np.zeros(
                shape, a.dtype)
        else:
            rows = (rng.integers(-3, 10, size=shape)).astype(a.dtype)
        return np.concatenate([a, rows], axis=axis), f"axis {axis} +{extra}"
    if kind == "zero_dim":
        axis = int(rng.integers(a.ndim))
        shape = list(a.shape)
        shape[axis] = 0
        return np.zeros(shape, a.dtype), f"shape {shape}"
    if kind == "huge_empty":
        shape = list(a.shape)
        zero, huge = rng.choice(a.ndim, size=2, replace=a.ndim < 2)
        shape[huge] = int(rng.choice(HUGE_BATCHES if huge == 0 and name in BATCHED else HUGE_DIMS))
        shape[zero] = 0
        if zero == huge:
            shape.append(int(rng.choice(HUGE_DIMS)))
        return ("zeros", tuple(shape), a.dtype.str), f"empty shape {shape}"
    if kind == "rank_up":
        axis = int(rng.integers(a.ndim + 1))
        return np.expand_dims(a, axis), f"expand_dims {axis}"
    if kind == "rank_down":
        if a.ndim == 0:
            return a.reshape(1), "scalar to [1]"
        if rng.random() < 0.5 or a.shape[0] == 0:
            return a.reshape(-1), "flattened"
        return a[0], "first row"
    return a.T, "transposed"


def _mutate_dtype(rng, a):
    a = np.array(a)
    name = DTYPES[rng.integers(len(DTYPES))]
    if a.dtype.kind in "US" and name != "str":  # strings of numbers do not parse back
        return np.zeros(a.shape, name), f"dtype {name} (zeros)"
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        return (a.astype(str) if name == "str" else a.astype(name)), f"dtype {name}"


def make_case(pool, seed, chunk, index):
    """Case `index` of a chunk: a function of (seed, chunk, index) only."""
    rng = np.random.default_rng([seed, chunk, index])
    op = list(OPS)[int(rng.integers(len(OPS)))]
    # Mostly a program of the op's kind (density or pure), sometimes any.
    kind = "density" if "density" in op else "pure"
    fitting = [b for b in pool if b.get("kind", "pure") == kind] if rng.random() < 0.9 else pool
    base = (fitting or pool)[int(rng.integers(len(fitting or pool)))]
    float_dtype = np.float32 if rng.random() < 0.5 else np.float64
    mode = MODES[int(rng.choice(len(MODES), p=MODE_WEIGHTS))]
    arrays = _valid_inputs(rng, base, op, float_dtype)
    names = PROGRAM + OPS[op]
    kinds = {name: "tensor" for name in names}
    mutations = []
    for _ in range(int(rng.choice([0, 1, 1, 1, 2, 2, 3, 4]))):
        name = names[int(rng.integers(len(names)))]
        what = rng.choice(["values", "shape", "dtype", "kind", "batch", "num_qubits"],
                          p=[0.42, 0.2, 0.1, 0.05, 0.1, 0.13])
        if what == "num_qubits":
            name = "num_qubits"
            value = int(NUM_QUBITS_VALUES[rng.integers(len(NUM_QUBITS_VALUES))])
            arrays[name] = np.array(value, np.int32)
            desc = f"= {value}"
        elif what == "batch":
            batched = [n for n in BATCHED if n in names]
            name = batched[int(rng.integers(len(batched)))]
            current = arrays[name]
            if isinstance(current, tuple) or current.ndim == 0:
                continue
            batch = int(rng.choice(BATCHES))
            reps = np.resize(np.arange(max(current.shape[0], 1)), batch)
            arrays[name] = (current[reps] if current.shape[0] else np.zeros((batch,) + current.shape[1:],
                                                                              current.dtype))
            desc = f"batch {batch}"
        elif what == "kind":
            kinds[name] = str(rng.choice(["array", "list", "none"]))
            desc = kinds[name]
        elif isinstance(arrays[name], tuple):
            continue  # an empty tensor of huge shape stays as it is
        elif what == "values":
            arrays[name], desc = _mutate_values(rng, name, arrays[name])
        elif what == "shape":
            arrays[name], desc = _mutate_shape(rng, name, arrays[name])
        else:
            arrays[name], desc = _mutate_dtype(rng, arrays[name])
        mutations.append(f"{name}: {what} {desc}")
    return dict(seed=seed, chunk=chunk, index=index, op=op, mode=mode, float_dtype=np.dtype(float_dtype).name,
                names=names, inputs=[(kinds[n], arrays[n]) for n in names], mutations=mutations)


def describe(case):
    shapes = []
    for name, (kind, value) in zip(case["names"], case["inputs"]):
        if isinstance(value, tuple):
            shapes.append(f"{name}=zeros{list(value[1])}")
        else:
            shapes.append(f"{name}={kind}:{value.dtype}{list(value.shape)}")
    return (f"{case['op']} {case['mode']} ({case['float_dtype']}) mutations={case['mutations']} "
            f"inputs: {' '.join(shapes)}")


# --------------------------------------------------------------- execution


class Runner:
    """Runs cases in this process (a child of the driver, or a replay)."""

    def __init__(self):
        import tensorflow as tf

        from qkeras_hybrid import ops

        from qkeras_hybrid.ops import density

        self.tf = tf
        self.ops = ops
        self.density = density
        self.graph_fns = {}

    def _materialize(self, kind, value):
        tf = self.tf
        if isinstance(value, tuple):  # ("zeros", shape, dtype)
            return tf.zeros(value[1], tf.as_dtype(np.dtype(value[2])))
        if kind == "none":
            return None
        if kind == "array":
            return value
        if kind == "list":
            return value.tolist()
        return tf.constant(value)

    def _fn(self, op):
        tf = self.tf
        ops = self.density if "density" in op else self.ops
        if not op.startswith("tape_"):
            return getattr(ops, op)
        both = op.endswith("_both")
        forward = getattr(ops, op[len("tape_"):len(op) - len("_both") * both])

        def tape(*args):
            watched = [a for a in args[6:] if tf.is_tensor(a) and a.dtype in (tf.float32, tf.float64)]
            with tf.GradientTape() as t:
                t.watch(watched)
                out = forward(*args)
                # expectation_and_state: (expectations, final_state).
                e = out[0] if isinstance(out, tuple) else out
                loss = tf.reduce_sum(e * tf.cast(tf.range(1, tf.shape(e)[-1] + 1), e.dtype))
                if both:
                    loss += tf.reduce_sum(out[1] * tf.cast(tf.range(tf.shape(out[1])[-1]) % 3 - 1, e.dtype))
            return out, t.gradient(loss, watched)

        return tape

    def run(self, case):
        """Runs one case; returns the name of its clean outcome (None when TF
        cannot even build its inputs, so that no op was called), or raises."""
        tf = self.tf
        try:
            args = [self._materialize(kind, value) for kind, value in case["inputs"]]
        except tf.errors.InvalidArgumentError:  # TF refuses the shape itself
            return None
        fn = self._fn(case["op"])
        mode = case["mode"]
        if mode == "graph" and not all(tf.is_tensor(a) for a in args):
            mode = "capture"
        try:
            if mode == "eager":
                out = fn(*args)
            elif mode == "graph":
                key = (case["op"], tuple(a.dtype for a in args))
                if key not in self.graph_fns:
                    self.graph_fns[key] = tf.function(
                        fn, input_signature=[tf.TensorSpec(None, a.dtype) for a in args])
                out = self.graph_fns[key](*args)
            else:
                out = tf.function(lambda: fn(*args))()
            for t in tf.nest.flatten(out):
                if t is not None:
                    t.numpy()
            return "result"
        except tf.errors.OpError as e:
            return type(e).__name__
        except (TypeError, ValueError) as e:
            return type(e).__name__


def _child(args):
    """Runs chunk `args.chunk` until its time is up; publishes the index of the
    case in flight in the progress file, the counts in the stats file."""
    sys.path[:0] = [HERE, REPO]
    pool = build_pool(args.seed, args.chunk)
    runner = Runner()
    with open(args.progress, "r+b") as f:
        progress = mmap.mmap(f.fileno(), 16)
    stats = dict(calls=0, cases=0, outcomes={}, ops={}, failures=[])

    def publish():  # atomically: the driver may read it after a crash
        with open(args.stats + ".tmp", "w") as f:
            json.dump(stats, f)
        os.replace(args.stats + ".tmp", args.stats)

    published = time.monotonic()
    inject = {}
    for item in filter(None, os.environ.get(INJECT_ENV, "").split(",")):
        chunk, index, kind = item.split(":")
        inject[(int(chunk), int(index))] = kind
    deadline = time.monotonic() + args.seconds
    index = 0
    while time.monotonic() < deadline:
        case = make_case(pool, args.seed, args.chunk, index)
        progress[:16] = struct.pack("<qq", index, 1)  # 1: a case is running
        try:
            fault = inject.get((args.chunk, index))
            if fault == "abort":
                os.abort()
            elif fault == "hang":
                time.sleep(3600)
            elif fault == "exception":
                raise RuntimeError("injected")
            outcome = runner.run(case)
        except Exception as e:  # not a clean outcome
            outcome = "failure"
            trace = traceback.format_exc()
            path = save_repro(args.repro_dir, case, f"exception-{type(e).__name__}", trace)
            stats["failures"].append(dict(kind=type(e).__name__, case=describe(case), repro=path,
                                          error=trace[-2000:]))
            published = 0
        progress[:16] = struct.pack("<qq", index, 0)
        index += 1
        stats["cases"] = index
        if outcome is not None:
            stats["calls"] += 1
            stats["outcomes"][outcome] = stats["outcomes"].get(outcome, 0) + 1
            key = f"{case['op']}/{case['mode']}/{case['float_dtype']}"
            stats["ops"][key] = stats["ops"].get(key, 0) + 1
        if time.monotonic() - published > 5:
            publish()
            published = time.monotonic()
    publish()


def save_repro(repro_dir, case, kind, details):
    os.makedirs(repro_dir, exist_ok=True)
    stem = os.path.join(repro_dir, f"{kind}-seed{case['seed']}-chunk{case['chunk']}-case{case['index']}")
    with open(stem + ".pkl", "wb") as f:
        pickle.dump(case, f)
    with open(stem + ".txt", "w") as f:
        f.write(f"{describe(case)}\n\nreplay: python tests/fuzz_ops.py --replay {stem}.pkl\n\n{details}\n")
    return stem + ".pkl"


def _save_cases(args):
    """Regenerates cases of a chunk that crashed and saves them as repros."""
    sys.path[:0] = [HERE, REPO]
    pool = build_pool(args.seed, args.chunk)
    details = open(args.details).read() if args.details else ""
    for index in args.save:
        save_repro(args.repro_dir, make_case(pool, args.seed, args.chunk, index), args.kind, details)


def _replay(path):
    sys.path[:0] = [HERE, REPO]
    with open(path, "rb") as f:
        case = pickle.load(f)
    print(describe(case))
    print("outcome:", Runner().run(case))


# ------------------------------------------------------------------ driver


def run(seconds, seed=0, repro_dir=None, chunk_seconds=45.0, hang_seconds=120.0, log=print, max_chunks=None):
    """Fuzzes for about `seconds` in child processes of `chunk_seconds` each
    (at most `max_chunks` of them).

    Returns a dict: calls, outcomes (counts by outcome), ops (counts by
    op/mode/dtype), failures (each with its kind, case and repro file).
    """
    repro_dir = os.path.abspath(repro_dir or os.environ.get("QKH_FUZZ_REPRO_DIR", os.path.join(REPO, "fuzz_repros")))
    total = dict(calls=0, outcomes={}, ops={}, failures=[], chunks=0, seed=seed)
    library = os.environ.get("QKERAS_HYBRID_OP_LIBRARY")
    log(f"fuzz: seed {seed}, {seconds:.0f} s, op library {library or 'installed'}, repros in {repro_dir}")
    start = time.monotonic()
    chunk = 0
    # A child needs ~10 s to import TF and compile its programs: no chunk
    # shorter than that is started.
    while time.monotonic() - start < seconds - 10 and chunk != max_chunks:
        budget = max(5.0, min(chunk_seconds, seconds - (time.monotonic() - start) - 8))
        _run_chunk(seed, chunk, budget, hang_seconds, repro_dir, total, log)
        chunk += 1
    total["chunks"] = chunk
    total["seconds"] = round(time.monotonic() - start, 1)
    log(summary(total))
    return total


def _run_chunk(seed, chunk, budget, hang_seconds, repro_dir, total, log):
    with tempfile.TemporaryDirectory(prefix="qkh_fuzz_") as tmp:
        progress_path = os.path.join(tmp, "progress")
        with open(progress_path, "wb") as f:
            f.write(struct.pack("<qq", -1, 0))
        stats_path = os.path.join(tmp, "stats.json")
        log_path = os.path.join(tmp, "child.log")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--seed", str(seed), "--chunk", str(chunk),
               "--seconds", str(budget), "--progress", progress_path, "--stats", stats_path,
               "--repro-dir", repro_dir]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        with open(log_path, "wb") as child_log:
            child = subprocess.Popen(cmd, stdout=child_log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            started = last_change = time.monotonic()
            last = None
            hung = False
            while child.poll() is None:
                time.sleep(0.2)
                with open(progress_path, "rb") as f:
                    state = struct.unpack("<qq", f.read(16))
                now = time.monotonic()
                if state != last:
                    last, last_change = state, now
                # One case running too long, or the whole child (its setup).
                elif (state[1] == 1 and now - last_change > hang_seconds) or (
                        now - started > budget + hang_seconds + 120):
                    child.kill()
                    child.wait()
                    hung = True
        with open(progress_path, "rb") as f:
            index, running = struct.unpack("<qq", f.read(16))
        stats = dict(calls=0, cases=0, outcomes={}, ops={}, failures=[])
        if os.path.exists(stats_path):
            with open(stats_path) as f:
                stats = json.load(f)
        if running:  # the cases after the last published stats, up to the one in flight
            stats["calls"] += index + 1 - stats["cases"]
        _merge(total, stats)
        if hung or child.returncode != 0:
            output = open(log_path, errors="replace").read()
            if hung:
                kind = "hang"
            elif child.returncode < 0:
                kind = f"crash-{signal.Signals(-child.returncode).name}"
            else:
                kind = f"exit-{child.returncode}"
            cases = [i for i in (index - 1, index) if i >= 0] if running else []
            failure = dict(kind=kind, chunk=chunk, case=index if running else None, output=output[-4000:])
            if cases:
                with open(os.path.join(tmp, "details"), "w") as f:
                    f.write(f"{kind} in case {index} (case {index - 1} ran just before)\n\n{output[-20000:]}")
                subprocess.run([sys.executable, os.path.abspath(__file__), "--save", *map(str, cases),
                                "--kind", kind, "--seed", str(seed), "--chunk", str(chunk), "--repro-dir", repro_dir,
                                "--details", os.path.join(tmp, "details")],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
                failure["repro"] = os.path.join(
                    repro_dir, f"{kind}-seed{seed}-chunk{chunk}-case{index}.pkl")
            total["failures"].append(failure)
            log(f"fuzz: {kind} in chunk {chunk}, case {index}; repro: {failure.get('repro')}\n{output[-3000:]}")


def _merge(total, stats):
    total["calls"] += stats["calls"]
    for key in ("outcomes", "ops"):
        for k, v in stats[key].items():
            total[key][k] = total[key].get(k, 0) + v
    total["failures"].extend(stats["failures"])


def summary(total):
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(total["outcomes"].items(), key=lambda kv: -kv[1]))
    return (f"fuzz: {total['calls']} op calls in {total.get('seconds', '?')} s, {total.get('chunks', '?')} chunks, "
            f"seed {total['seed']}: {outcomes}; {len(total['failures'])} failures")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    parser.add_argument("--repro-dir", default=None, help="default: $QKH_FUZZ_REPRO_DIR or fuzz_repros/")
    parser.add_argument("--chunk-seconds", type=float, default=45.0)
    parser.add_argument("--hang-seconds", type=float, default=120.0)
    parser.add_argument("--replay", help="a repro file to run in this process")
    # Internal: the child process and the repro writer.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--kind", help=argparse.SUPPRESS)
    parser.add_argument("--details", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay:
        return _replay(args.replay)
    if args.child:
        return _child(args)
    if args.save:
        return _save_cases(args)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    total = run(args.seconds, seed, args.repro_dir, args.chunk_seconds, args.hang_seconds,
                log=lambda s: print(s, flush=True))
    print(json.dumps(dict(calls=total["calls"], outcomes=total["outcomes"], ops=total["ops"]), indent=1))
    for failure in total["failures"]:
        print("FAILURE:", json.dumps(failure, indent=1)[:4000])
    return 1 if total["failures"] else 0



# ------------------------------------------------ measurement ops (issue 14)
# The ops of qkeras_hybrid.ops.measure, added to the tables above: their
# extra inputs (qubits, shots, seed, a state and upstreams of their shapes)
# and the functions that call them.

MEASURE_OPS = {
    "probabilities": ["angles", "qubits"],
    "probabilities_adjoint_grad": ["angles", "qubits", "upstream_probabilities"],
    "state": ["angles"],
    "state_adjoint_grad": ["angles", "state", "upstream_state"],
    "sample": ["angles", "qubits", "shots", "seed"],
    "sampled_expectation": ["angles", "shots", "seed"],
    "tape_probabilities": ["angles", "qubits"],
    "tape_state": ["angles"],
}
OPS.update(MEASURE_OPS)
BATCHED = BATCHED + ("state", "upstream_probabilities", "upstream_state")
# Shots beyond this are fuzzed only where they fail fast: a sample output that
# cannot fit in memory. Otherwise they are valid requests for minutes of work.
MAX_FUZZ_SHOTS = 10**5
_expectation_valid_inputs = _valid_inputs
_expectation_make_case = make_case
_expectation_fn = Runner._fn


def _unit_states(rng, batch, n, dtype):
    psi = rng.normal(size=(batch, 2, 2**n))
    return (psi / (np.sqrt((psi**2).sum(axis=(1, 2), keepdims=True)) + 1e-12)).astype(dtype)


def _valid_inputs(rng, base, op, float_dtype):  # noqa: F811 (extends the one above)
    arrays = _expectation_valid_inputs(rng, base, op, float_dtype)
    if op not in MEASURE_OPS:
        return arrays
    n, batch = base["num_qubits"], arrays["angles"].shape[0]
    names = MEASURE_OPS[op]
    k = int(rng.integers(1, n + 1))
    if "qubits" in names:
        arrays["qubits"] = rng.permutation(n)[:k].astype(np.int32)
    if "shots" in names:
        arrays["shots"] = np.array(rng.choice([1, 2, 10, 100, 1000]), np.int32)
    if "seed" in names:
        arrays["seed"] = rng.integers(-(2**63), 2**63 - 1, size=2, dtype=np.int64)
    if "upstream_probabilities" in names:
        arrays["upstream_probabilities"] = rng.normal(size=(batch, 2**k)).astype(float_dtype)
    if "state" in names:
        arrays["state"] = _unit_states(rng, batch, n, float_dtype)
        arrays["upstream_state"] = rng.normal(size=(batch, 2, 2**n)).astype(float_dtype)
    return arrays


def _dims(value):
    return value[1] if isinstance(value, tuple) else np.shape(value)


def make_case(pool, seed, chunk, index):  # noqa: F811 (extends the one above)
    case = _expectation_make_case(pool, seed, chunk, index)
    if "shots" not in case["names"]:
        return case
    inputs = dict(zip(case["names"], case["inputs"]))
    kind, shots = inputs["shots"]
    if isinstance(shots, tuple) or np.size(shots) != 1 or np.asarray(shots).dtype.kind not in "iuf":
        return case
    value = float(np.asarray(shots).reshape(-1)[0])
    if value <= MAX_FUZZ_SHOTS:
        return case
    if case["op"] == "sample":
        batch = _dims(inputs["angles"][1])[0] if len(_dims(inputs["angles"][1])) else 1
        k = _dims(inputs["qubits"][1])[0] if len(_dims(inputs["qubits"][1])) else 1
        if float(batch) * value * float(k) * 4 > 64e9:  # more than any test machine's memory: fails fast
            return case
    inputs["shots"] = (kind, np.asarray(shots).astype(np.asarray(shots).dtype).clip(max=MAX_FUZZ_SHOTS))
    case["inputs"] = [inputs[n] for n in case["names"]]
    case["mutations"] = case["mutations"] + [f"shots: clipped to {MAX_FUZZ_SHOTS}"]
    return case


def _measure_fn(self, op):
    if op not in MEASURE_OPS:
        return _expectation_fn(self, op)
    tf = self.tf
    from qkeras_hybrid.ops import measure

    forward = {
        "probabilities_adjoint_grad": lambda *a: measure.probabilities_adjoint_grad(a[:6], a[6], a[7], a[8]),
        "state_adjoint_grad": lambda *a: measure.state_adjoint_grad(a[:6], a[6], a[7], a[8]),
        "probabilities": lambda *a: measure.probabilities(a[:6], a[6], a[7]),
        "state": lambda *a: measure.state(a[:6], a[6]),
        "sample": lambda *a: measure.sample(a[:6], a[6], a[7], a[8], a[9]),
        "sampled_expectation": lambda *a: measure.sampled_expectation(a[:6], a[6], a[7], a[8]),
    }
    if not op.startswith("tape_"):
        return forward[op]
    fn = forward[op[len("tape_"):]]

    def tape(*args):
        watched = [a for a in args[6:7] if tf.is_tensor(a) and a.dtype in (tf.float32, tf.float64)]
        with tf.GradientTape() as t:
            t.watch(watched)
            out = fn(*args)
            flat = tf.reshape(out, [-1])
            loss = tf.reduce_sum(flat * tf.cast(tf.range(tf.shape(flat)[0]) % 5 - 2, out.dtype))
        return out, t.gradient(loss, watched)

    return tape


Runner._fn = _measure_fn

if __name__ == "__main__":
    sys.exit(main())
