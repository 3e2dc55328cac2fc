// Shape functions and their helpers shared by the op registrations
// (measure_ops.cc, density_ops.cc, ops.cc), and the program inputs that the
// measurement and density ops start with.
#ifndef QKERAS_HYBRID_TF_SHAPE_FNS_H_
#define QKERAS_HYBRID_TF_SHAPE_FNS_H_

#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace qkh {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// The most qubits n whose 2**n states or outcomes a static dimension holds.
constexpr int kMaxShapeQubits = 62;

// Inputs 0..5 (the program, as for QkerasHybrid>Expectation) and 6.
#define QKH_PROGRAM_INPUTS            \
  Input("num_qubits: int32")          \
      .Input("block_meta: int32")     \
      .Input("gate_meta: int32")      \
      .Input("gate_data: float64")    \
      .Input("pauli_masks: int64")    \
      .Input("pauli_coeffs: float64") \
      .Input("angles: T")

// Ranks of the program inputs 0..5 (the kernels check the rest) and the
// shape [batch, num_angles] of angles (input 6).
inline Status ProgramAndAngles(InferenceContext* c, ShapeHandle* angles) {
  ShapeHandle s;
  const int ranks[6] = {0, 2, 2, 1, 3, 2};
  for (int i = 0; i < 6; ++i) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), ranks[i], &s));
  return c->WithRank(c->input(6), 2, angles);
}

// 2**k for a constant vector of 1 <= k <= max_qubits measured qubits (input
// `index`), else unknown.
inline DimensionHandle Outcomes(InferenceContext* c, int index, int max_qubits) {
  ShapeHandle qubits;
  if (!c->WithRank(c->input(index), 1, &qubits).ok() || !c->ValueKnown(c->Dim(qubits, 0)))
    return c->UnknownDim();
  const int64_t k = c->Value(c->Dim(qubits, 0));
  return k >= 1 && k <= max_qubits ? c->MakeDim(int64_t{1} << k) : c->UnknownDim();
}

// 2**num_qubits when num_qubits (input 0) is a known, valid constant; else
// unknown (the kernel names a bad value).
inline DimensionHandle StateSize(InferenceContext* c) {
  const ::tensorflow::Tensor* n = c->input_tensor(0);
  if (n == nullptr || n->dims() != 0) return c->UnknownDim();
  const int32_t qubits = n->scalar<int32_t>()();
  if (qubits < 1 || qubits > kMaxShapeQubits) return c->UnknownDim();
  return c->MakeDim(int64_t{1} << qubits);
}

// The shape `dims`, with its largest known dimensions made unknown until the
// known ones multiply to at most 2^62 elements: TensorFlow's eager tape turns
// every static output shape into a TensorShape, whose constructor aborts the
// process on overflow (e.g. a constant 62-qubit state of a batch of 3). Such
// an output can never be allocated: the kernel then fails cleanly.
inline ShapeHandle Bounded(InferenceContext* c, std::vector<DimensionHandle> dims) {
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
inline DimensionHandle Observables(InferenceContext* c) {
  ShapeHandle masks;
  if (!c->WithRank(c->input(4), 3, &masks).ok()) return c->UnknownDim();
  return c->Dim(masks, 0);
}

// upstream (input `input`) is [batch, num_observables].
inline Status UpstreamShape(InferenceContext* c, int input, ShapeHandle angles,
                            DimensionHandle num_observables) {
  ShapeHandle upstream;
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(input), 2, &upstream));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(upstream, 0), c->Dim(angles, 0), &d));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(upstream, 1), num_observables, &d));
  return ::tensorflow::OkStatus();
}

// shots (a scalar) and seed ([2]) at inputs `shots`, shots + 1.
inline Status ShotsAndSeed(InferenceContext* c, int shots) {
  ShapeHandle s;
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots), 0, &s));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots + 1), 1, &s));
  return c->WithValue(c->Dim(s, 0), 2, &d);
}

// ShotsAndSeed, then readout ([n, 2]) at input shots + 2.
inline Status ShotsSeedReadout(InferenceContext* c, int shots) {
  ShapeHandle s;
  DimensionHandle d;
  TF_RETURN_IF_ERROR(ShotsAndSeed(c, shots));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(shots + 2), 2, &s));
  return c->WithValue(c->Dim(s, 1), 2, &d);
}

// The shape function of a gradient op whose only output, d_angles, is
// shaped like the angles.
inline Status AnglesShapedGradient(InferenceContext* c) {
  ShapeHandle angles;
  TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
  c->set_output(0, angles);
  return ::tensorflow::OkStatus();
}

// probabilities [batch, 2**k] of the qubits at input 7; a constant k above
// max_qubits leaves 2**k unknown.
inline Status ProbabilitiesShape(InferenceContext* c, int max_qubits) {
  ShapeHandle angles;
  TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
  c->set_output(0, Bounded(c, {c->Dim(angles, 0), Outcomes(c, 7, max_qubits)}));
  return ::tensorflow::OkStatus();
}

// samples [batch, shots, k] from inputs 7 qubits, 8 shots, 9 seed and, with
// `readout`, 10 readout.
inline Status SamplesShape(InferenceContext* c, bool readout) {
  ShapeHandle angles, qubits;
  TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(7), 1, &qubits));
  TF_RETURN_IF_ERROR(readout ? ShotsSeedReadout(c, 8) : ShotsAndSeed(c, 8));
  DimensionHandle shots = c->UnknownDim();
  if (const ::tensorflow::Tensor* t = c->input_tensor(8);
      t != nullptr && t->dims() == 0 && t->scalar<int32_t>()() > 0)
    shots = c->MakeDim(t->scalar<int32_t>()());
  c->set_output(0, Bounded(c, {c->Dim(angles, 0), shots, c->Dim(qubits, 0)}));
  return ::tensorflow::OkStatus();
}

// expectations [batch, num_observables] estimated from inputs 7 shots, 8
// seed and, with `readout`, 9 readout.
inline Status SampledExpectationsShape(InferenceContext* c, bool readout) {
  ShapeHandle angles;
  TF_RETURN_IF_ERROR(ProgramAndAngles(c, &angles));
  TF_RETURN_IF_ERROR(readout ? ShotsSeedReadout(c, 7) : ShotsAndSeed(c, 7));
  c->set_output(0, c->Matrix(c->Dim(angles, 0), Observables(c)));
  return ::tensorflow::OkStatus();
}

}  // namespace qkh

#endif  // QKERAS_HYBRID_TF_SHAPE_FNS_H_
