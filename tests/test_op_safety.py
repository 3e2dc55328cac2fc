"""Malformed programs fed straight to the raw op must raise, never crash, with a
message naming the problem; and the compiler's errors on bad circuits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid
from qkeras_hybrid import ops
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

_PLUS = np.array([[1, 1], [1, 1]]) / 2
_MINUS = np.array([[1, -1], [-1, 1]]) / 2
_CNOT = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=complex)


def _flat(m):
    m = np.asarray(m, dtype=complex)
    return np.stack([m.real, m.imag], axis=-1).reshape(-1)


def _valid_program():
    """Hand-built from program.h's layout: Rx(angle) on q0, then CNOT(q0, q1);
    observables <Z1> + 0.5 <X0> and <Y0 X1>."""
    rx_data = np.concatenate([[0.5], _flat(_PLUS), [-0.5], _flat(_MINUS)])  # Rx = exp(-i a X/2)
    return dict(
        num_qubits=np.array(2, dtype=np.int32),
        block_meta=np.array([[1, 0, 0, 0, 0, 0, 1], [2, 0, 1, 0, 0, 1, 1]], dtype=np.int32),
        gate_meta=np.array([[1, 0, 0, 2], [0, -1, rx_data.size, 1]], dtype=np.int32),
        gate_data=np.concatenate([rx_data, _flat(_CNOT)]),
        pauli_masks=np.array([[[0, 2], [1, 0]], [[3, 1], [0, 0]]], dtype=np.int64),
        pauli_coeffs=np.array([[1.0, 0.5], [1.0, 0.0]]),
        angles=np.array([[0.3], [1.1], [-2.0]]),
    )


def _without_angle_slots():
    """_valid_program with a constant identity in place of Rx."""
    p = _valid_program()
    p.update(gate_meta=np.array([[0, -1, 0, 1], [0, -1, 8, 1]], dtype=np.int32),
             gate_data=np.concatenate([_flat(np.eye(2)), _flat(_CNOT)]), angles=p["angles"][:, :0])
    return p


_ORDER = ["num_qubits", "block_meta", "gate_meta", "gate_data", "pauli_masks", "pauli_coeffs", "angles"]


def _args(p, dtype=tf.float64):
    return [tf.constant(p[k], dtype=dtype if k == "angles" else None) for k in _ORDER]


def test_hand_built_program_is_valid_and_correct():
    p = _valid_program()
    a = p["angles"][:, 0]
    # Rx(a)|0> then CNOT: <Z1> = cos a, <X0> = 0, <Y0 X1> = -sin a.
    expected = np.stack([np.cos(a), -np.sin(a)], axis=1)
    q = cirq.LineQubit.range(2)
    sim = cirq.Simulator(dtype=np.complex128)
    for row, angle in zip(expected, a):
        ref = sim.simulate_expectation_values(
            cirq.Circuit(cirq.rx(angle)(q[0]), cirq.CNOT(*q)),
            [cirq.Z(q[1]) + 0.5 * cirq.X(q[0]), cirq.Y(q[0]) * cirq.X(q[1])])
        np.testing.assert_allclose(row, np.real(ref), atol=1e-12)
    for dtype, tol in ((tf.float64, 1e-12), (tf.float32, 1e-6)):
        got = ops.expectation(*_args(p, dtype)).numpy()
        np.testing.assert_allclose(got, expected, atol=tol)
        upstream = tf.ones([3, 2], dtype)
        grad = ops.expectation_adjoint_grad(*_args(p, dtype), upstream).numpy()
        np.testing.assert_allclose(grad[:, 0], -np.sin(a) - np.cos(a), atol=tol * 10)


def _set(key, index, value):
    def mutate(p):
        p[key] = p[key].copy()
        p[key][index] = value
    return mutate


def _replace(key, fn):
    def mutate(p):
        p[key] = fn(p[key])
    return mutate


# (id, mutation, substring of the error)
MALFORMED = [
    ("qubit_out_of_range", _set("block_meta", (1, 2), 2), "qubit index 2 out of range"),
    ("qubit_negative", _set("block_meta", (0, 1), -1), "qubit index -1 out of range"),
    ("qubit_repeated", _set("block_meta", (1, 2), 0), "repeated"),
    ("block_size_0", _set("block_meta", (0, 0), 0), "block size must be 1, 2 or 3"),
    ("block_size_4", _set("block_meta", (1, 0), 4), "block size must be 1, 2 or 3"),
    ("block_kind_unknown", _set("block_meta", (0, 4), 7), "unknown block kind 7"),
    ("block_kind_negative", _set("block_meta", (1, 4), -1), "unknown block kind -1"),
    ("gate_range_past_end", _set("block_meta", (1, 6), 2), "not inside gate_meta"),
    ("gate_range_negative_first", _set("block_meta", (1, 5), -1), "not inside gate_meta"),
    ("gate_range_empty", _set("block_meta", (1, 6), 0), "not inside gate_meta"),
    ("gate_range_huge", _set("block_meta", (1, 6), 2**31 - 1), "not inside gate_meta"),
    ("gate_in_two_blocks", _set("block_meta", (1, 5), 0), "already belongs to block"),
    ("gate_in_no_block",
     _replace("gate_meta", lambda g: np.concatenate([g, g[1:]])), "belongs to no block"),
    ("gate_type_unknown", _set("gate_meta", (1, 0), 9), "unknown gate type 9"),
    ("angle_slot_too_big", _set("gate_meta", (0, 1), 1), "angle slot 1 out of range"),
    ("angle_slot_negative", _set("gate_meta", (0, 1), -3), "angle slot -3 out of range"),
    ("num_terms_too_big", _set("gate_meta", (0, 3), 3), "num_terms must be in [1, 2]"),
    ("num_terms_zero", _set("gate_meta", (0, 3), 0), "num_terms must be in [1, 2]"),
    ("data_offset_past_end", _set("gate_meta", (1, 2), 19), "outside gate_data"),
    ("data_offset_negative", _set("gate_meta", (1, 2), -1), "outside gate_data"),
    ("data_offset_int32_max", _set("gate_meta", (1, 2), 2**31 - 1), "outside gate_data"),
    ("gate_data_truncated", _replace("gate_data", lambda d: d[:-1]), "outside gate_data"),
    ("gate_data_empty", _replace("gate_data", lambda d: d[:0]), "outside gate_data"),
    ("gate_data_nan", _set("gate_data", 5, np.nan), "gate_data[5] is not finite"),
    ("gate_data_inf", _set("gate_data", 30, -np.inf), "gate_data[30] is not finite"),
    ("pauli_coeff_nan", _set("pauli_coeffs", (0, 1), np.nan), "pauli_coeffs[0, 1] is not finite"),
    ("pauli_mask_outside_register", _set("pauli_masks", (0, 0, 1), 4), "outside the 2-qubit register"),
    ("pauli_mask_x_outside_register", _set("pauli_masks", (1, 1, 0), 2**40), "outside the 2-qubit register"),
    ("pauli_mask_negative", _set("pauli_masks", (1, 0, 0), -1), "outside the 2-qubit register"),
    ("angle_nan", _set("angles", (1, 0), np.nan), "angles[1, 0] is not finite"),
    ("angle_inf", _set("angles", (2, 0), np.inf), "angles[2, 0] is not finite"),
    ("angle_minus_inf", _set("angles", (0, 0), -np.inf), "angles[0, 0] is not finite"),
    ("num_qubits_0", _set("num_qubits", (), 0), "num_qubits must be in [1, 62]"),
    ("num_qubits_negative", _set("num_qubits", (), -5), "num_qubits must be in [1, 62]"),
    ("num_qubits_63", _set("num_qubits", (), 63), "num_qubits must be in [1, 62]"),
    ("num_qubits_1_with_2_qubit_block", _set("num_qubits", (), 1), "qubit index 1 out of range"),
    # Shapes (the kernel checks them; traced with unknown shapes below).
    ("num_qubits_not_scalar", _replace("num_qubits", lambda n: np.array([n])), "num_qubits must be a scalar"),
    ("block_meta_6_columns", _replace("block_meta", lambda b: b[:, :6]), "block_meta must have shape [num_blocks, 7]"),
    ("block_meta_rank_1", _replace("block_meta", lambda b: b.reshape(-1)), "block_meta must have shape"),
    ("gate_meta_5_columns", _replace("gate_meta", lambda g: np.pad(g, ((0, 0), (0, 1)))),
     "gate_meta must have shape [num_gates, 4]"),
    ("gate_data_rank_2", _replace("gate_data", lambda d: d.reshape(2, -1)), "gate_data must be a vector"),
    ("pauli_masks_3_columns", _replace("pauli_masks", lambda m: np.pad(m, ((0, 0), (0, 0), (0, 1)))),
     "pauli_masks must have shape"),
    ("pauli_coeffs_fewer_terms", _replace("pauli_coeffs", lambda c: c[:, :1]), "pauli_coeffs must have shape"),
    ("pauli_coeffs_more_observables", _replace("pauli_coeffs", lambda c: np.concatenate([c, c])),
     "pauli_coeffs must have shape"),
    ("angles_rank_1", _replace("angles", lambda a: a[:, 0]), "angles must have shape [batch, num_angles]"),
    ("angles_rank_3", _replace("angles", lambda a: a[None]), "angles must have shape [batch, num_angles]"),
    ("angles_too_few_columns", _replace("angles", lambda a: a[:, :0]), "angle slot 0 out of range [0, 0)"),
]


def _call(p, dtype, graph, grad, upstream=None):
    args = _args(p, dtype)
    batch = p["angles"].shape[0] if p["angles"].ndim else 1
    if upstream is None:
        upstream = tf.ones([batch, 2], dtype)

    def run(*a):
        return ops.expectation_adjoint_grad(*a) if grad else ops.expectation(*a)

    inputs = args + ([upstream] if grad else [])
    if graph:
        # Unknown shapes: the kernel, not shape inference, must catch the problem.
        run = tf.function(run, input_signature=[tf.TensorSpec(None, x.dtype) for x in inputs])
    return run(*inputs)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "adjoint"])
@pytest.mark.parametrize("name,mutate,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_program_raises(name, mutate, message, grad, graph):
    p = _valid_program()
    mutate(p)
    dtype = tf.float32 if "angle" in name else tf.float64
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _call(p, dtype, graph, grad)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("upstream_shape", [(3, 1), (2, 2), (3, 2, 1), (6,)])
def test_upstream_of_wrong_shape_raises(upstream_shape, graph):
    p = _valid_program()
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _call(p, tf.float64, graph, grad=True, upstream=tf.ones(upstream_shape, tf.float64))
    assert "upstream must have shape [3,2]" in str(info.value), str(info.value)


SHAPE_ERRORS = [m for m in MALFORMED if any(k in m[0] for k in ("rank", "columns", "not_scalar", "coeffs_"))]


@pytest.mark.parametrize("name,mutate,message", SHAPE_ERRORS, ids=[m[0] for m in SHAPE_ERRORS])
def test_static_shapes_rejected_while_tracing(name, mutate, message):
    """With known shapes, the op's shape function rejects the graph at trace time."""
    p = _valid_program()
    mutate(p)
    args = _args(p)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        tf.function(lambda: ops.expectation(*args))()


@pytest.mark.parametrize("num_qubits", [40, 62])
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "adjoint"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_state_too_large_for_memory_raises_resource_exhausted(num_qubits, grad, dtype):
    p = _valid_program()
    p["num_qubits"] = np.int32(num_qubits)
    for graph in (False, True):
        with pytest.raises(tf.errors.ResourceExhaustedError) as info:
            _call(p, dtype, graph, grad)
        assert f"{num_qubits} qubits" in str(info.value), str(info.value)


def test_op_still_works_after_errors():
    """Errors leave no broken state behind (thread-local buffers, pools)."""
    p = _valid_program()
    bad = _valid_program()
    bad["num_qubits"] = np.int32(40)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        ops.expectation(*_args(bad))
    got = ops.expectation(*_args(p)).numpy()
    np.testing.assert_allclose(got[:, 0], np.cos(p["angles"][:, 0]), atol=1e-12)


def test_empty_batch_and_no_blocks():
    p = _valid_program()
    p["angles"] = np.zeros((0, 1))
    assert ops.expectation(*_args(p)).shape == (0, 2)
    assert ops.expectation_adjoint_grad(*_args(p), tf.zeros([0, 2], tf.float64)).shape == (0, 1)
    p = _valid_program()
    p.update(block_meta=np.zeros((0, 7), np.int32), gate_meta=np.zeros((0, 4), np.int32),
             gate_data=np.zeros(0), angles=np.zeros((2, 0)))
    np.testing.assert_allclose(ops.expectation(*_args(p)).numpy(), [[1.0, 0.0]] * 2)  # |00>: <Z1>=1



# ------------------------------------------- sizes that overflow, in a child

# Each case once made TF CHECK-fail (SIGABRT) or loop over an empty batch, so
# they run in a child process: a crash fails the cases, not the test session.
# The body sees _valid_program's inputs as tensors `t` (float64 angles) and
# returns what the op returned or raises.
_ISOLATED = {
    # Item 1 of issue 12: TensorShape({batch, 2, 2**n}) built for the message
    # (4 * 2 * 2**60 = 2**63 overflows int64).
    **{f"from_state_{n}_qubits_wrong_state_{op}": f"""
t['num_qubits'] = tf.constant({n}, tf.int32)
args = [t[k] for k in PROGRAM] + [tf.zeros((4, 2, 4), tf.float64), tf.zeros((4, 1), tf.float64)]
ops.{op}(*args, *([tf.ones((4, 2), tf.float64)] if 'grad' in '{op}' else []))
""" for n in (60, 61, 62) for op in ("expectation_from_state", "expectation_from_state_adjoint_grad")},
    # An empty angles tensor may have any batch: [batch, O] overflows.
    # (`s`: the program without angle slots, which an empty row can feed.)
    "huge_batch_output_overflows": """
ops.expectation(*s, tf.zeros((2**62, 0), tf.float64))
""",
    "huge_batch_upstream_message": """
ops.expectation_adjoint_grad(*s, tf.zeros((2**62, 0), tf.float64), tf.zeros((0, 2), tf.float64))
""",
    "huge_batch_from_state_message": """
ops.expectation_from_state(*s, tf.zeros((0, 2, 4), tf.float64), tf.zeros((2**62, 0), tf.float64))
""",
    "huge_batch_output_too_large": """
ops.expectation(*s, tf.zeros((2**40, 0), tf.float64))
""",
    # Counts narrowed to int: 2**31 observables (of no terms) became negative.
    "observables_beyond_int32": """
ops.expectation(t['num_qubits'], t['block_meta'], t['gate_meta'], t['gate_data'],
                tf.zeros((2**31, 0, 2), tf.int64), tf.zeros((2**31, 0), tf.float64), t['angles'])
""",
    "terms_beyond_int32": """
ops.expectation(t['num_qubits'], t['block_meta'], t['gate_meta'], t['gate_data'],
                tf.zeros((0, 2**31, 2), tf.int64), tf.zeros((0, 2**31), tf.float64), t['angles'])
""",
    "angles_beyond_int32": """
ops.expectation(*[t[k] for k in PROGRAM], tf.zeros((0, 2**31), tf.float64))
""",
    # Nothing to compute, but once a simulation per (empty) row: a hang.
    "empty_rows_not_simulated": """
p = list(s)
p[4], p[5] = tf.zeros((0, 1, 2), tf.int64), tf.zeros((0, 1), tf.float64)
return [ops.expectation(*p, tf.zeros((2**40, 0), tf.float64)).shape.as_list(),
        ops.expectation_adjoint_grad(*p, tf.zeros((2**40, 0), tf.float64),
                                     tf.zeros((2**40, 0), tf.float64)).shape.as_list()]
""",
}
# (exception type, substring of its message) or the value returned.
_ISOLATED_EXPECTED = {
    **{f"from_state_{n}_qubits_wrong_state_{op}": (
        "InvalidArgumentError", f"initial_state must have shape [batch, 2, 2**num_qubits] = [4,2,{2**n}], got [4,2,4]")
       for n in (60, 61, 62) for op in ("expectation_from_state", "expectation_from_state_adjoint_grad")},
    "huge_batch_output_overflows": ("InvalidArgumentError", f"expectations would have shape [{2**62},2]"),
    "huge_batch_upstream_message": ("InvalidArgumentError", f"upstream must have shape [{2**62},2]"),
    "huge_batch_from_state_message": ("InvalidArgumentError", f"= [{2**62},2,4], got [0,2,4]"),
    "huge_batch_output_too_large": ("ResourceExhaustedError", f"expectations of shape [{2**40},2] needs more"),
    "observables_beyond_int32": ("InvalidArgumentError", "too many observables (pauli_masks dimension 0): 2147483648"),
    "terms_beyond_int32": ("InvalidArgumentError", "too many terms per observable (pauli_masks dimension 1)"),
    "angles_beyond_int32": ("InvalidArgumentError", "too many angles (angles dimension 1): 2147483648"),
    "empty_rows_not_simulated": [[2**40, 0], [2**40, 0]],
}


@pytest.fixture(scope="module")
def isolated_outcomes():
    """{case: [exception type, message] or its return value}; a case that
    kills or hangs its process gets ["crash" or "hang", the output's end],
    and the cases after it run in a new process."""
    from conftest import REPO

    names = list(_ISOLATED)
    bodies = "\n".join(
        f"def case_{i}():\n" + "\n".join("    " + line for line in body.strip().splitlines())
        for i, body in enumerate(_ISOLATED.values()))
    code = f"""
import json, sys
sys.path.insert(0, "tests")
import tensorflow as tf
from qkeras_hybrid import ops
from test_op_safety import _valid_program, _without_angle_slots
PROGRAM = {_ORDER[:6]!r}
{bodies}
for i in map(int, sys.argv[1:]):
    t = {{k: tf.constant(v) for k, v in _valid_program().items()}}
    s = [tf.constant(_without_angle_slots()[k]) for k in PROGRAM]
    print("START", i, flush=True)
    try:
        out = globals()["case_" + str(i)]()
    except Exception as e:
        out = [type(e).__name__, str(e)]
    print("RESULT", json.dumps(out), flush=True)
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    outcomes, todo = {}, list(range(len(names)))
    while todo:
        try:
            run = subprocess.run([sys.executable, "-c", code, *map(str, todo)], capture_output=True, text=True,
                                 cwd=REPO, env=env, timeout=120)
            stdout, failure = run.stdout, "crash"
        except subprocess.TimeoutExpired as e:
            stdout, failure = e.stdout.decode() if e.stdout else "", "hang"
            run = e
        current = None
        for line in stdout.splitlines():
            if line.startswith("START "):
                current = int(line.split()[1])
            elif line.startswith("RESULT ") and current is not None:
                outcomes[names[current]] = json.loads(line[len("RESULT "):])
                todo.remove(current)
                current = None
        if current is None and todo:  # died before its first case
            current = todo[0]
        if current is not None:
            tail = (run.stderr if isinstance(run.stderr, str) else (run.stderr or b"").decode())[-2000:]
            outcomes[names[current]] = [failure, tail]
            todo.remove(current)
    return outcomes


@pytest.mark.parametrize("name", list(_ISOLATED))
def test_sizes_from_user_input_never_abort(name, isolated_outcomes):
    got, expected = isolated_outcomes[name], _ISOLATED_EXPECTED[name]
    if isinstance(expected, tuple):
        assert got[0] == expected[0] and expected[1] in got[1], got
    else:
        assert got == expected



@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""), reason="ASan needs more address space than the limit")
def test_gate_matrices_count_toward_the_memory_check():
    """A program of a few megabytes (a million 3-qubit gates sharing one
    matrix) asks every simulator for gigabytes of per-lane gate matrices: it
    is refused before anything is allocated. (Once only the state vectors
    were counted; without the address-space limit set here that run would
    have exhausted the machine.)"""
    from conftest import run_fresh_python

    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # 16 lanes x float64 x (block + gate matrix, re + im: 2 x 2 x 64): 32 KiB a gate.
    gates = int(physical / 32768) + 1
    out = run_fresh_python(f"""
        import resource
        import numpy as np
        import tensorflow as tf
        from qkeras_hybrid import ops
        eye = np.stack([np.eye(8), np.zeros((8, 8))], axis=-1).reshape(-1)
        block_meta = np.tile(np.array([3, 0, 1, 2, 0, 0, 1], np.int32), ({gates}, 1))
        block_meta[:, 5] = np.arange({gates})
        args = [tf.constant(np.int32(3)), tf.constant(block_meta),
                tf.constant(np.tile(np.array([0, -1, 0, 1], np.int32), ({gates}, 1))), tf.constant(eye),
                tf.constant(np.array([[[0, 1]]], np.int64)), tf.constant([[1.0]], tf.float64),
                tf.zeros((32, 0), tf.float64)]
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = used + {physical} // 2
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            ops.expectation(*args)
            print("no error")
        except Exception as e:
            print(type(e).__name__, e)
    """)
    assert "ResourceExhaustedError" in out and f"3 qubits ({gates} gates) needs" in out, out
    assert "state vectors and gate matrices, more than this machine's memory allows" in out, out


# ------------------------------------------ values that overflow the precision


def _run(p, dtype, grad=False, upstream=None):
    args = _args(p, dtype)
    if not grad:
        return ops.expectation(*args)
    if upstream is None:
        upstream = np.ones([p["angles"].shape[0], 2])
    return ops.expectation_adjoint_grad(*args, tf.constant(upstream, dtype))


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "adjoint"])
def test_program_values_overflowing_float32_are_named(grad):
    """Finite in float64, infinite once converted to float32: once NaN outputs."""
    p = _valid_program()
    p["gate_data"][0] = 1e300  # Rx's first eigenvalue
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"gate_data\[0\] = 1e\+300 overflows float32"):
        _run(p, tf.float32, grad)
    p = _valid_program()
    p["pauli_coeffs"][0, 1] = -1e39
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"pauli_coeffs\[0, 1\] = -1e\+39 overflows float32"):
        _run(p, tf.float32, grad)
    p["angles"][:] = 0  # in float64 the same coefficient is fine: <Z1> + c <X0> = 1
    np.testing.assert_allclose(_run(p, tf.float64).numpy()[:, 0], 1.0)


def test_generator_overflowing_is_named():
    """eig * projector entries overflow though each number is finite."""
    p = _valid_program()
    p["gate_data"][0] = 1e300
    p["gate_data"][1:9] *= 1e10  # the first projector's entries
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"gate_meta\[0\]: the generator .* in gate_data\[0, 18\) overflows float64"):
        _run(p, tf.float64)


def test_angle_times_eigenvalue_overflowing_is_named():
    p = _valid_program()
    p["gate_data"][0] = 1e300
    p["angles"][2, 0] = 1e10
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"angles\[2, 0\] = 1e\+10 times a generator eigenvalue of up to 1e\+300"):
        _run(p, tf.float64)
    p["angles"][2, 0] = 1.0  # 1e300 is a valid (if odd) eigenvalue
    assert np.all(np.isfinite(_run(p, tf.float64).numpy()))


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "adjoint"])
def test_results_overflowing_float32_are_named(grad):
    p = _valid_program()
    p["pauli_masks"][0] = [[0, 2], [0, 2]]  # Z1 twice: 3e38 <Z1> + 3e38 <Z1>
    p["pauli_coeffs"][0] = [3e38, 3e38]
    p["angles"][:] = 0.1
    name = "d_angles" if grad else "expectations"
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{name}\[0, 0\] is -?(inf|nan): the computation overflows float32"):
        _run(p, tf.float32, grad)
    assert np.all(np.isfinite(_run(p, tf.float64, grad).numpy()))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_non_finite_upstream_is_named(value, graph):
    p = _valid_program()
    upstream = np.ones([3, 2])
    upstream[2, 1] = value
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"upstream\[2, 1\] is not finite \({value}\)"):
        _call(p, tf.float64, graph, grad=True, upstream=tf.constant(upstream))


# -------------------------------------------------- dtypes, in the wrappers


@pytest.mark.parametrize("index", range(8))
def test_captured_tensor_of_wrong_dtype_is_a_type_error(index):
    """Inside a tf.function, TF's generated wrapper once failed with
    `AssertionError: Unreachable` on a captured tensor of a wrong dtype."""
    args = _args(_valid_program()) + [tf.ones([3, 2], tf.float64)]
    name = (_ORDER + ["upstream"])[index]
    args[index] = tf.cast(args[index], tf.float32 if args[index].dtype != tf.float32 else tf.int64)
    with pytest.raises(TypeError, match=name):
        tf.function(lambda: ops.expectation_adjoint_grad(*args))()


def test_program_as_numpy_arrays_is_converted_when_lossless():
    p = _valid_program()
    expected = ops.expectation(*_args(p)).numpy()
    arrays = [p[k] for k in _ORDER]
    arrays[1] = arrays[1].astype(np.int64)  # fits in int32
    arrays[3] = arrays[3].tolist()
    np.testing.assert_allclose(ops.expectation(*arrays).numpy(), expected)
    arrays[1] = arrays[1] + 2**40
    with pytest.raises(ValueError, match="block_meta holds values outside the range of int32"):
        ops.expectation(*arrays)


@pytest.mark.parametrize("name,value,error", [
    ("gate_data", lambda d: d.astype(complex), TypeError),  # once: imaginary parts dropped
    ("block_meta", lambda b: b.astype(bool), TypeError),
    ("block_meta", lambda b: b + 0.5, TypeError),
    ("pauli_masks", lambda m: None, TypeError),
    ("angles", lambda a: a.astype(str), TypeError),
    ("angles", lambda a: np.full_like(a, 1e300), ValueError),  # to float32
])
def test_unconvertible_values_are_named(name, value, error):
    p = _valid_program()
    arrays = {k: p[k] for k in _ORDER}
    arrays[name] = value(arrays[name])
    if name == "angles":  # a float32 upstream fixes T
        args = [tf.constant(arrays[k]) for k in _ORDER[:6]] + [arrays["angles"], tf.ones([3, 2])]
        with pytest.raises(error, match=name):
            ops.expectation_adjoint_grad(*args)
        return
    with pytest.raises(error, match=name):
        ops.expectation(*[arrays[k] for k in _ORDER])


def test_float_inputs_of_two_dtypes_are_a_type_error():
    args = _args(_valid_program(), tf.float32)
    with pytest.raises(TypeError, match="angles is float32, upstream is float64"):
        ops.expectation_adjoint_grad(*args, tf.ones([3, 2], tf.float64))
    with pytest.raises(TypeError, match="angles must be a float32 or float64 tensor, got int32"):
        ops.expectation(*args[:6], tf.zeros([3, 1], tf.int32))


def test_sanitized_library_is_chosen_by_environment(monkeypatch, tmp_path):
    from qkeras_hybrid.ops import _loader

    missing = str(tmp_path / "asan" / _loader.LIBRARY_NAME)
    monkeypatch.setenv(_loader.LIBRARY_ENV, missing)
    assert _loader.library_path() == missing
    with pytest.raises(_loader.OpLibraryError, match=f"{_loader.LIBRARY_ENV} names {missing}"):
        _loader._load()


# ------------------------------------------------------------ compile time


class _NonUnitaryGate(cirq.Gate):
    def _num_qubits_(self):
        return 1

    def __repr__(self):
        return "MyNonUnitaryGate()"


class _OpaqueSymbolicGate(cirq.Gate):
    """A parameterized gate with no unitary, no decomposition and no symbolic form."""

    def __init__(self, t):
        self.t = t

    def _num_qubits_(self):
        return 1

    def _is_parameterized_(self):
        return cirq.is_parameterized(self.t)

    def _parameter_names_(self):
        return cirq.parameter_names(self.t)

    def _resolve_parameters_(self, resolver, recursive):
        return _OpaqueSymbolicGate(resolver.value_of(self.t, recursive))

    def __repr__(self):
        return "MyOpaqueSymbolicGate()"


@pytest.mark.parametrize(
    "op,name",
    [
        (_NonUnitaryGate().on(cirq.LineQubit(0)), "MyNonUnitaryGate"),
        (_OpaqueSymbolicGate(sympy.Symbol("a")).on(cirq.LineQubit(0)), "MyOpaqueSymbolicGate"),
        (cirq.depolarize(0.1, n_qubits=3).on(*cirq.LineQubit.range(3)), "depolarize"),
    ],
    ids=["custom_non_unitary", "custom_symbolic", "three_qubit_channel"],
)
def test_unsupported_cirq_gate_raises_naming_it(op, name):
    circuit = cirq.Circuit(cirq.H(cirq.LineQubit(0)), op)
    with pytest.raises(qkeras_hybrid.circuits.UnsupportedGateError, match=name):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(cirq.LineQubit(0))])


def test_qutrit_raises():
    qid = cirq.LineQid(0, dimension=3)
    circuit = cirq.Circuit(cirq.MatrixGate(np.eye(3), qid_shape=(3,)).on(qid))
    with pytest.raises(qkeras_hybrid.circuits.UnsupportedGateError, match="dimension"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(cirq.LineQubit(0))], qubits=[qid])


def test_unsupported_qiskit_instruction_raises():
    from qiskit.quantum_info import Kraus

    qc = QuantumCircuit(3)
    qc.h(0)
    # A 3-qubit channel (channels run on 1-2 qubits).
    qc.append(Kraus([np.sqrt(0.9) * np.eye(8), np.sqrt(0.1) * np.diag([1, -1] * 4)]).to_instruction(), [0, 1, 2])
    with pytest.raises(qkeras_hybrid.circuits.UnsupportedGateError, match="3 qubits|more than 2"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp("ZII")])


def test_symbolic_phased_iswap_compiles_or_names_the_gate():
    """PhasedISwapPowGate with a symbolic phase_exponent: supported, or a clear error, not a numpy TypeError."""
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.H(q[0]), cirq.PhasedISwapPowGate(phase_exponent=a, exponent=b)(*q))
    try:
        qkeras_hybrid.compile_circuit(circuit, [cirq.X(q[1])])
    except qkeras_hybrid.circuits.UnsupportedGateError as e:
        assert "PhasedISwap" in str(e)


@pytest.mark.parametrize(
    "observable",
    [(1 + 1j) * cirq.Z(cirq.LineQubit(0)), cirq.Z(cirq.LineQubit(0)) + 0.5j * cirq.X(cirq.LineQubit(1))],
    ids=["string", "sum"],
)
def test_complex_cirq_observable_raises(observable):
    q = cirq.LineQubit.range(2)
    with pytest.raises(ValueError, match="not real"):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H.on_each(*q)), [observable])


def test_complex_and_mismatched_qiskit_observables_raise():
    qc = QuantumCircuit(2)
    qc.h([0, 1])
    with pytest.raises(ValueError, match="not real"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp(["ZI", "XX"], [1.0, 0.5j])])
    with pytest.raises(ValueError, match="3 qubits"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp("ZZZ")])


def test_symbolic_observable_coefficient_raises():
    q = cirq.LineQubit(0)
    with pytest.raises((ValueError, TypeError)):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H(q)), [sympy.Symbol("k") * cirq.Z(q)])


def test_observable_on_qubit_outside_circuit_raises():
    q = cirq.LineQubit.range(3)
    with pytest.raises(ValueError, match="not one of"):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H(q[0]), cirq.CNOT(q[0], q[1])), [cirq.Z(q[2])])


def test_symbol_errors():
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.rx(a)(q[0]), cirq.ry(2 * b)(q[1]))
    with pytest.raises(ValueError, match=r"\['zz'\].*do not appear"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(q[0])], symbols=[a, b, "zz"])
    with pytest.raises(ValueError, match=r"\['b'\]"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(q[0])], symbols=[a])
    with pytest.raises(ValueError, match="more than once"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(q[0])], symbols=[a, b, "a"])
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.rx(theta, 0)
    with pytest.raises(ValueError, match="do not appear"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp("Z")], symbols=[theta, Parameter("other")])


@pytest.mark.parametrize("shape", [(2, 1), (2, 3), (4,), (2, 2, 1)])
def test_wrong_symbol_values_shape_raises(shape):
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(2)
    cc = qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.rx(a)(q[0]), cirq.ry(b)(q[1])), [cirq.Z(q[0])])
    with pytest.raises(ValueError, match=r"\[batch, 2\]"):
        cc.expectation(np.zeros(shape))


def test_no_observables_and_wrong_circuit_type_raise():
    q = cirq.LineQubit(0)
    with pytest.raises(ValueError, match="observable"):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H(q)), [])
    with pytest.raises(TypeError, match="cirq.Circuit or a qiskit.QuantumCircuit"):
        qkeras_hybrid.compile_circuit("H 0", [cirq.Z(q)])


@pytest.mark.parametrize("value", [4, 5])
def test_max_fused_qubits_beyond_op_limit_raises_clearly(value):
    """Blocks may hold at most 3 qubits (program.h); asking for more must say so,
    not fail deep inside numpy (or, worse, build a malformed program)."""
    q = cirq.LineQubit.range(4)
    circuit = cirq.Circuit(cirq.CZ(q[0], q[1]), cirq.CZ(q[1], q[2]), cirq.CZ(q[2], q[3]))
    with pytest.raises(ValueError, match="max_fused_qubits"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.X(q[0])], max_fused_qubits=value)
