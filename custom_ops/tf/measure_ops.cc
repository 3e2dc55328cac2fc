// Registrations of the measurement ops; the kernels live in
// measure_kernels.cc. Inputs 0..5 are the program, as for
// QkerasHybrid>Expectation.
#include "shape_fns.h"
#include "tensorflow/core/framework/op.h"

namespace qkh {

REGISTER_OP("QkerasHybrid>Probabilities")
    .QKH_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Output("probabilities: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) { return ProbabilitiesShape(c, kMaxShapeQubits); })
    .Doc(R"doc(
Probabilities of the basis states of `qubits` in the final state U|0...0>,
marginalized over the other qubits, in Cirq's order: the first listed qubit is
the most significant bit of the outcome index. qubits: int32 [k], 1 <= k <=
num_qubits distinct register indices. probabilities: [batch, 2**k], summed in
float64. The program's observables are not used.
)doc");

REGISTER_OP("QkerasHybrid>ProbabilitiesAdjointGrad")
    .QKH_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn(AnglesShapedGradient)
    .Doc(R"doc(
Adjoint-method vector-Jacobian product of QkerasHybrid>Probabilities:
d_angles[b, a] = sum_m upstream[b, m] d probabilities[b, m] / d angles[b, a].
upstream: [batch, 2**k].
)doc");

REGISTER_OP("QkerasHybrid>State")
    .QKH_PROGRAM_INPUTS
    .Output("state: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      c->set_output(0, Bounded(c, {c->Dim(angles, 0), c->MakeDim(2), StateSize(c)}));
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
The final state U|0...0> of each sample. state: [batch, 2, 2**num_qubits],
real parts then imaginary parts; bit q of the amplitude index is qubit q (the
reverse of Cirq's order). The program's observables are not used.
)doc");

REGISTER_OP("QkerasHybrid>StateAdjointGrad")
    .QKH_PROGRAM_INPUTS
    .Input("state: T")
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn(AnglesShapedGradient)
    .Doc(R"doc(
Adjoint-method vector-Jacobian product of QkerasHybrid>State, started from
`state`, its output at the same angles (no forward sweep; exact only for that
state): d_angles[b, a] = sum upstream[b] * d state[b] / d angles[b, a] over
the real and imaginary parts. upstream: [batch, 2, 2**num_qubits].
)doc");

REGISTER_OP("QkerasHybrid>Sample")
    .QKH_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Input("shots: int32")
    .Input("seed: int64")
    .Output("samples: int32")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) { return SamplesShape(c, /*readout=*/false); })
    .Doc(R"doc(
`shots` measurements of `qubits` in the computational basis per sample, drawn
from the final state's marginal distribution of those qubits.
samples: int32 [batch, shots, k]; samples[b, s, j] is the bit of qubits[j], so
a row reads in Cirq's order. seed: int64 [2], the key of a Philox4x32-10
counter-based generator; the draw of (row b, shot s) depends on (seed, b, s)
only, not on threads or on how the batch is split.
)doc");

REGISTER_OP("QkerasHybrid>SampledExpectation")
    .QKH_PROGRAM_INPUTS
    .Input("shots: int32")
    .Input("seed: int64")
    .Output("expectations: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) { return SampledExpectationsShape(c, /*readout=*/false); })
    .Doc(R"doc(
Expectation values <O_o> [batch, num_observables] estimated from `shots`
measurements, the way hardware measures. The Pauli terms of all observables
are grouped greedily into qubit-wise commuting groups (terms that agree on
every qubit they share); each group is one measurement setting: the final
state is rotated into the group's basis (H for X, S^dagger then H for Y) and
`shots` bitstrings of the group's qubits are drawn, and each term of the
group is the mean of (-1)^parity of its qubits over those shots (the terms
share the shots). So a PauliSum costs shots times its number of groups: e.g.
Z0 + Z1 + Z0 Z1 is one setting, X0 + Z0 two. Identity terms are exact.
seed: int64 [2], the key of a Philox4x32-10 counter-based generator; the draw
of (row b, setting g, shot s) depends on (seed, b, g, s) only.
)doc");

}  // namespace qkh
