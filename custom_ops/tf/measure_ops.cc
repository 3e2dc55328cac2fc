// Registrations of the measurement ops; the kernels live in
// measure_kernels.cc. Inputs 0..5 are the program, as for
// QkerasHybrid>Expectation.
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
Status ProgramAndAngles(InferenceContext* c, ShapeHandle* angles) {
  ShapeHandle s;
  const int ranks[6] = {0, 2, 2, 1, 3, 2};
  for (int i = 0; i < 6; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), ranks[i], &s));
  return c->WithRank(c->input(6), 2, angles);
}

// 2**k for a constant vector of k measured qubits (input `index`), else unknown.
DimensionHandle Outcomes(InferenceContext* c, int index) {
  ShapeHandle qubits;
  if (!c->WithRank(c->input(index), 1, &qubits).ok() || !c->ValueKnown(c->Dim(qubits, 0)))
    return c->UnknownDim();
  const int64_t k = c->Value(c->Dim(qubits, 0));
  return k >= 1 && k <= 62 ? c->MakeDim(int64_t{1} << k) : c->UnknownDim();
}

// 2**num_qubits for a known num_qubits (input 0), else unknown.
DimensionHandle StateSize(InferenceContext* c) {
  const ::tensorflow::Tensor* n = c->input_tensor(0);
  if (n == nullptr || n->dims() != 0) return c->UnknownDim();
  const int32_t qubits = n->scalar<int32_t>()();
  return qubits >= 1 && qubits <= 62 ? c->MakeDim(int64_t{1} << qubits) : c->UnknownDim();
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
DimensionHandle Observables(InferenceContext* c) {
  ShapeHandle masks;
  if (!c->WithRank(c->input(4), 3, &masks).ok()) return c->UnknownDim();
  return c->Dim(masks, 0);
}

// shots (a scalar) and seed ([2]) at inputs `shots`, shots + 1.
Status ShotsAndSeed(InferenceContext* c, int shots) {
  ShapeHandle s;
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots), 0, &s));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots + 1), 1, &s));
  return c->WithValue(c->Dim(s, 0), 2, &d);
}

}  // namespace

#define QKH_PROGRAM_INPUTS            \
  Input("num_qubits: int32")          \
      .Input("block_meta: int32")     \
      .Input("gate_meta: int32")      \
      .Input("gate_data: float64")    \
      .Input("pauli_masks: int64")    \
      .Input("pauli_coeffs: float64") \
      .Input("angles: T")

REGISTER_OP("QkerasHybrid>Probabilities")
    .QKH_PROGRAM_INPUTS
    .Input("qubits: int32")
    .Output("probabilities: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      c->set_output(0, Bounded(c, {c->Dim(angles, 0), Outcomes(c, 7)}));
      return ::tensorflow::OkStatus();
    })
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
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      c->set_output(0, angles);
      return ::tensorflow::OkStatus();
    })
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
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      c->set_output(0, angles);
      return ::tensorflow::OkStatus();
    })
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
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles, qubits;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(7), 1, &qubits));
      TF_RETURN_IF_ERROR(ShotsAndSeed(c, 8));
      DimensionHandle shots = c->UnknownDim();
      if (const ::tensorflow::Tensor* t = c->input_tensor(8);
          t != nullptr && t->dims() == 0 && t->scalar<int32_t>()() > 0)
        shots = c->MakeDim(t->scalar<int32_t>()());
      c->set_output(0, Bounded(c, {c->Dim(angles, 0), shots, c->Dim(qubits, 0)}));
      return ::tensorflow::OkStatus();
    })
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
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
      TF_RETURN_IF_ERROR(ShotsAndSeed(c, 7));
      c->set_output(0, c->Matrix(c->Dim(angles, 0), Observables(c)));
      return ::tensorflow::OkStatus();
    })
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

#undef QKH_PROGRAM_INPUTS

}  // namespace qkh
