// Registrations of the density-matrix ops; the kernels live in
// density_kernels.cc. Inputs 0..5 are a density program (program.h: the
// register holds vec(rho) on num_qubits = 2n qubits), input 6 the angles.
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace qkh {
namespace {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Ranks of the program inputs 0..5 (the kernels check the rest) and the
// shape [batch, num_angles] of angles (input 6).
Status DensityProgramAndAngles(InferenceContext* c, ShapeHandle* angles) {
  ShapeHandle s;
  const int ranks[6] = {0, 2, 2, 1, 3, 2};
  for (int i = 0; i < 6; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), ranks[i], &s));
  return c->WithRank(c->input(6), 2, angles);
}

// The shape `dims`, with its largest known dimensions made unknown until the
// known ones multiply to at most 2^62 elements: TensorFlow's eager tape turns
// every static output shape into a TensorShape, whose constructor aborts the
// process on overflow (e.g. a constant 62-qubit state of a batch of 3). Such
// an output can never be allocated: the kernel then fails cleanly.
ShapeHandle Bounded(InferenceContext* c, std::vector<DimensionHandle> dims) {
  constexpr int64_t kMaxElements = int64_t{1} << 62;
  for (;;) {
    int64_t product = 1;
    int largest = -1;
    bool fits = true;
    for (size_t i = 0; i < dims.size(); ++i) {
      if (!c->ValueKnown(dims[i])) continue;
      const int64_t d = c->Value(dims[i]);
      if (largest < 0 || d > c->Value(dims[largest])) largest = static_cast<int>(i);
      if (d != 0 && product > kMaxElements / d) fits = false;
      product = fits ? product * d : product;
    }
    if (fits || largest < 0) return c->MakeShape(dims);
    dims[largest] = c->UnknownDim();
  }
}

// The number of observables (pauli_masks dimension 0).
DimensionHandle DensityObservables(InferenceContext* c) {
  ShapeHandle masks;
  if (!c->WithRank(c->input(4), 3, &masks).ok()) return c->UnknownDim();
  return c->Dim(masks, 0);
}

// 2**k for a constant vector of k measured qubits (input `index`), else unknown.
DimensionHandle DensityOutcomes(InferenceContext* c, int index) {
  ShapeHandle qubits;
  if (!c->WithRank(c->input(index), 1, &qubits).ok() || !c->ValueKnown(c->Dim(qubits, 0)))
    return c->UnknownDim();
  const int64_t k = c->Value(c->Dim(qubits, 0));
  return k >= 1 && k <= 31 ? c->MakeDim(int64_t{1} << k) : c->UnknownDim();
}

// shots (scalar), seed ([2]) and readout ([n, 2]) at inputs shots, +1, +2.
Status ShotsSeedReadout(InferenceContext* c, int shots) {
  ShapeHandle s;
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots), 0, &s));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots + 1), 1, &s));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(s, 0), 2, &d));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots + 2), 2, &s));
  return c->WithValue(c->Dim(s, 1), 2, &d);
}

}  // namespace

#define QKH_DENSITY_PROGRAM_INPUTS    \
  Input("num_qubits: int32")          \
      .Input("block_meta: int32")     \
      .Input("gate_meta: int32")      \
      .Input("gate_data: float64")    \
      .Input("pauli_masks: int64")    \
      .Input("pauli_coeffs: float64") \
      .Input("angles: T")

REGISTER_OP("QkerasHybrid>DensityExpectation")
    .QKH_DENSITY_PROGRAM_INPUTS
    .Output("expectations: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(DensityProgramAndAngles(c, &angles));
      c->set_output(0, c->Matrix(c->Dim(angles, 0), DensityObservables(c)));
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
    .QKH_DENSITY_PROGRAM_INPUTS
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles, upstream;
      DimensionHandle d;
      TF_RETURN_IF_ERROR(DensityProgramAndAngles(c, &angles));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(7), 2, &upstream));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(upstream, 0), c->Dim(angles, 0), &d));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(upstream, 1), DensityObservables(c), &d));
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
    .QKH_DENSITY_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Output("probabilities: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(DensityProgramAndAngles(c, &angles));
      c->set_output(0, Bounded(c, {c->Dim(angles, 0), DensityOutcomes(c, 7)}));
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Probabilities of the basis states of `qubits` (physical qubits, 1 <= k <= n
distinct) under the final density matrix rho, marginalized over the other
qubits, in Cirq's order: the first listed qubit is the most significant bit of
the outcome index. probabilities: [batch, 2**k], summed in float64.
)doc");

REGISTER_OP("QkerasHybrid>DensityProbabilitiesAdjointGrad")
    .QKH_DENSITY_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(DensityProgramAndAngles(c, &angles));
      c->set_output(0, angles);
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Adjoint-method vector-Jacobian product of QkerasHybrid>DensityProbabilities:
d_angles[b, a] = sum_m upstream[b, m] d probabilities[b, m] / d angles[b, a].
)doc");

REGISTER_OP("QkerasHybrid>DensitySample")
    .QKH_DENSITY_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Input("shots: int32")
    .Input("seed: int64")
    .Input("readout: float64")
    .Output("samples: int32")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles, qubits;
      TF_RETURN_IF_ERROR(DensityProgramAndAngles(c, &angles));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(7), 1, &qubits));
      TF_RETURN_IF_ERROR(ShotsSeedReadout(c, 8));
      DimensionHandle shots = c->UnknownDim();
      if (const ::tensorflow::Tensor* t = c->input_tensor(8);
          t != nullptr && t->dims() == 0 && t->scalar<int32_t>()() > 0)
        shots = c->MakeDim(t->scalar<int32_t>()());
      c->set_output(0, Bounded(c, {c->Dim(angles, 0), shots, c->Dim(qubits, 0)}));
      return ::tensorflow::OkStatus();
    })
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
    .QKH_DENSITY_PROGRAM_INPUTS
    .Input("shots: int32")
    .Input("seed: int64")
    .Input("readout: float64")
    .Output("expectations: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(DensityProgramAndAngles(c, &angles));
      TF_RETURN_IF_ERROR(ShotsSeedReadout(c, 7));
      c->set_output(0, c->Matrix(c->Dim(angles, 0), DensityObservables(c)));
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Expectation values tr(O_o rho) [batch, num_observables] estimated from
`shots` measurements per qubit-wise commuting group of Pauli terms, as
QkerasHybrid>SampledExpectation measures a pure state: each group is one
setting (rho rotated into its basis), its terms share the shots; identity
terms are exact. readout float64 [n, 2]: (P(read 1 | true 0), P(read 0 |
true 1)) per physical qubit, applied to every measured bit. seed: int64 [2];
the draw of (row b, setting g, shot s) depends on (seed, b, g, s) only.
)doc");

#undef QKH_DENSITY_PROGRAM_INPUTS

}  // namespace qkh
