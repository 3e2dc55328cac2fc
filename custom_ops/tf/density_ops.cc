// Registrations of the density-matrix ops; the kernels live in
// density_kernels.cc. Inputs 0..5 are a density program (program.h: the
// register holds vec(rho) on num_qubits = 2n qubits), input 6 the angles.
#include "shape_fns.h"
#include "tensorflow/core/framework/op.h"

namespace qkh {

REGISTER_OP("QkerasHybrid>DensityExpectation")
    .QKH_PROGRAM_INPUTS
    .Output("expectations: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      c->set_output(0, c->Matrix(c->Dim(angles, 0), Observables(c)));
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Exact expectation values tr(O_o rho) of a density program: rho is the final
density matrix of a noisy circuit on n = num_qubits / 2 qubits, simulated as
the vector vec(rho)[r + (c << n)] = rho[r, c] on num_qubits qubits (unitaries
act as U on the row qubits and conj(U) on the column qubits, channels as
superoperators). The Pauli masks act on the n physical qubits.
angles: [batch, num_angles]; expectations: [batch, num_observables].
)doc");

REGISTER_OP("QkerasHybrid>DensityExpectationAdjointGrad")
    .QKH_PROGRAM_INPUTS
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      TF_RETURN_IF_ERROR(UpstreamShape(c, 7, angles, Observables(c)));
      c->set_output(0, angles);
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Adjoint-method vector-Jacobian product of QkerasHybrid>DensityExpectation:
d_angles[b, a] = sum_o upstream[b, o] d tr(O_o rho_b) / d angles[b, a]. The
state before each non-unitary block is restored by its inverse (when given
and well conditioned) or from a checkpoint saved by the forward sweep.
)doc");

REGISTER_OP("QkerasHybrid>DensityProbabilities")
    .QKH_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Output("probabilities: T")
    .Attr("T: {float, double}")
    // The physical qubits are half the register's.
    .SetShapeFn([](InferenceContext* c) { return ProbabilitiesShape(c, kMaxShapeQubits / 2); })
    .Doc(R"doc(
Probabilities of the basis states of `qubits` (physical qubits, 1 <= k <= n
distinct) under the final density matrix rho, marginalized over the other
qubits, in Cirq's order: the first listed qubit is the most significant bit of
the outcome index. probabilities: [batch, 2**k], summed in float64.
)doc");

REGISTER_OP("QkerasHybrid>DensityProbabilitiesAdjointGrad")
    .QKH_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn(AnglesShapedGradient)
    .Doc(R"doc(
Adjoint-method vector-Jacobian product of QkerasHybrid>DensityProbabilities:
d_angles[b, a] = sum_m upstream[b, m] d probabilities[b, m] / d angles[b, a].
)doc");

REGISTER_OP("QkerasHybrid>DensitySample")
    .QKH_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Input("shots: int32")
    .Input("seed: int64")
    .Input("readout: float64")
    .Output("samples: int32")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) { return SamplesShape(c, /*readout=*/true); })
    .Doc(R"doc(
`shots` measurements of `qubits` per batch row, drawn from the final density
matrix's marginal distribution of those qubits, then read out with errors:
readout float64 [n, 2] holds (P(read 1 | true 0), P(read 0 | true 1)) per
physical qubit (zeros: none), applied to every sampled bit.
samples: int32 [batch, shots, k]; samples[b, s, j] is the bit of qubits[j].
seed: int64 [2], the key of a Philox4x32-10 counter-based generator; the draw
of (row b, shot s) depends on (seed, b, s) only, as in QkerasHybrid>Sample.
)doc");

REGISTER_OP("QkerasHybrid>DensitySampledExpectation")
    .QKH_PROGRAM_INPUTS
    .Input("shots: int32")
    .Input("seed: int64")
    .Input("readout: float64")
    .Output("expectations: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) { return SampledExpectationsShape(c, /*readout=*/true); })
    .Doc(R"doc(
Expectation values tr(O_o rho) [batch, num_observables] estimated from
`shots` measurements per qubit-wise commuting group of Pauli terms, as
QkerasHybrid>SampledExpectation measures a pure state: each group is one
setting (rho rotated into its basis), its terms share the shots; identity
terms are exact. readout float64 [n, 2]: (P(read 1 | true 0), P(read 0 |
true 1)) per physical qubit, applied to every measured bit. seed: int64 [2];
the draw of (row b, setting g, shot s) depends on (seed, b, g, s) only.
)doc");

}  // namespace qkh
