// Op registrations with full shape functions; the kernels live in kernels.cc.
#include "shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace qkh {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Checks the program inputs (0..5) and returns [batch, num_angles] of
// `angles` (input angles_input) and the number of observables.
static Status ProgramShapes(InferenceContext* c, ShapeHandle* angles,
                            DimensionHandle* num_observables, int angles_input = 6) {
  ShapeHandle s;
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &s));  // num_qubits
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &s));  // block_meta
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(s, 1), 7, &d));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &s));  // gate_meta
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(s, 1), 4, &d));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &s));  // gate_data
  ShapeHandle masks, coeffs;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 3, &masks));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(masks, 2), 2, &d));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 2, &coeffs));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(masks, 0), c->Dim(coeffs, 0), num_observables));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(masks, 1), c->Dim(coeffs, 1), &d));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(angles_input), 2, angles));
  return ::tensorflow::OkStatus();
}

// initial_state (input 6) is [batch, 2, 2**num_qubits]: real, imaginary parts.
static Status InitialStateShape(InferenceContext* c, ShapeHandle angles,
                                ShapeHandle* state) {
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(6), 3, state));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(*state, 1), 2, &d));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(*state, 0), c->Dim(angles, 0), &d));
  return ::tensorflow::OkStatus();
}

// final_state (input 7) is [batch or 0, 2, 2**num_qubits] (see
// ExpectationAndState).
static Status FinalStateShape(InferenceContext* c) {
  ShapeHandle state;
  DimensionHandle d;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(7), 3, &state));
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(state, 1), 2, &d));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(state, 2), StateSize(c), &d));
  return ::tensorflow::OkStatus();
}

REGISTER_OP("QkerasHybrid>Expectation")
    .Input("num_qubits: int32")
    .Input("block_meta: int32")
    .Input("gate_meta: int32")
    .Input("gate_data: float64")
    .Input("pauli_masks: int64")
    .Input("pauli_coeffs: float64")
    .Input("angles: T")
    .Output("expectations: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      DimensionHandle num_observables;
      TF_RETURN_IF_ERROR(ProgramShapes(c, &angles, &num_observables));
      c->set_output(0, c->Matrix(c->Dim(angles, 0), num_observables));
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Expectation values <O_o> of a compiled circuit for a batch of angle vectors.
angles: [batch, num_angles]; expectations: [batch, num_observables].
)doc");

REGISTER_OP("QkerasHybrid>ExpectationAdjointGrad")
    .Input("num_qubits: int32")
    .Input("block_meta: int32")
    .Input("gate_meta: int32")
    .Input("gate_data: float64")
    .Input("pauli_masks: int64")
    .Input("pauli_coeffs: float64")
    .Input("angles: T")
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      DimensionHandle num_observables;
      TF_RETURN_IF_ERROR(ProgramShapes(c, &angles, &num_observables));
      TF_RETURN_IF_ERROR(UpstreamShape(c, 7, angles, num_observables));
      c->set_output(0, angles);
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Adjoint-method vector-Jacobian product of QkerasHybrid>Expectation:
d_angles[b, a] = sum_o upstream[b, o] d<O_o>/d angles[b, a].
)doc");

REGISTER_OP("QkerasHybrid>ExpectationFromState")
    .Input("num_qubits: int32")
    .Input("block_meta: int32")
    .Input("gate_meta: int32")
    .Input("gate_data: float64")
    .Input("pauli_masks: int64")
    .Input("pauli_coeffs: float64")
    .Input("initial_state: T")
    .Input("angles: T")
    .Output("expectations: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles, state;
      DimensionHandle num_observables;
      TF_RETURN_IF_ERROR(ProgramShapes(c, &angles, &num_observables, 7));
      TF_RETURN_IF_ERROR(InitialStateShape(c, angles, &state));
      c->set_output(0, c->Matrix(c->Dim(angles, 0), num_observables));
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Expectation values <psi|U^dagger O_o U|psi> of a compiled circuit U run from
the given initial states psi (not renormalized).
initial_state: [batch, 2, 2**num_qubits], real then imaginary parts; bit q of
the amplitude index is qubit q. angles: [batch, num_angles].
expectations: [batch, num_observables].
)doc");

REGISTER_OP("QkerasHybrid>ExpectationFromStateAdjointGrad")
    .Input("num_qubits: int32")
    .Input("block_meta: int32")
    .Input("gate_meta: int32")
    .Input("gate_data: float64")
    .Input("pauli_masks: int64")
    .Input("pauli_coeffs: float64")
    .Input("initial_state: T")
    .Input("angles: T")
    .Input("upstream: T")
    .Output("d_initial_state: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles, state;
      DimensionHandle num_observables;
      TF_RETURN_IF_ERROR(ProgramShapes(c, &angles, &num_observables, 7));
      TF_RETURN_IF_ERROR(InitialStateShape(c, angles, &state));
      TF_RETURN_IF_ERROR(UpstreamShape(c, 8, angles, num_observables));
      c->set_output(0, state);
      c->set_output(1, angles);
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
Adjoint-method vector-Jacobian product of QkerasHybrid>ExpectationFromState
with respect to the initial state (real and imaginary parts) and the angles.
)doc");

// The forward op of a gradient that reuses the forward's final state: a
// new op beside Expectation, whose signature saved models pin.
REGISTER_OP("QkerasHybrid>ExpectationAndState")
    .Input("num_qubits: int32")
    .Input("block_meta: int32")
    .Input("gate_meta: int32")
    .Input("gate_data: float64")
    .Input("pauli_masks: int64")
    .Input("pauli_coeffs: float64")
    .Input("angles: T")
    .Output("expectations: T")
    .Output("final_state: T")
    .Attr("T: {float, double}")
    .Attr("max_state_bytes: int = -1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      DimensionHandle num_observables;
      TF_RETURN_IF_ERROR(ProgramShapes(c, &angles, &num_observables));
      c->set_output(0, c->Matrix(c->Dim(angles, 0), num_observables));
      c->set_output(1, c->MakeShape({c->UnknownDim(), c->MakeDim(2), StateSize(c)}));
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
QkerasHybrid>Expectation that also outputs the final state U|0...0> of each
sample, for QkerasHybrid>ExpectationAdjointGradFromFinalState.
expectations: [batch, num_observables].
final_state: [batch, 2, 2**num_qubits], real then imaginary parts; bit q of the
amplitude index is qubit q. [0, 2, 2**num_qubits] (no states kept) when the
batch's states would take more than max_state_bytes (-1: an eighth of the
machine's memory): the gradient then runs the forward sweep again. Not
computed when no consumer needs it (a graph that only uses expectations).
)doc");

REGISTER_OP("QkerasHybrid>ExpectationAdjointGradFromFinalState")
    .Input("num_qubits: int32")
    .Input("block_meta: int32")
    .Input("gate_meta: int32")
    .Input("gate_data: float64")
    .Input("pauli_masks: int64")
    .Input("pauli_coeffs: float64")
    .Input("angles: T")
    .Input("final_state: T")
    .Input("upstream: T")
    .Output("d_angles: T")
    .Attr("T: {float, double}")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle angles;
      DimensionHandle num_observables;
      TF_RETURN_IF_ERROR(ProgramShapes(c, &angles, &num_observables));
      TF_RETURN_IF_ERROR(FinalStateShape(c));
      TF_RETURN_IF_ERROR(UpstreamShape(c, 8, angles, num_observables));
      c->set_output(0, angles);
      return ::tensorflow::OkStatus();
    })
    .Doc(R"doc(
QkerasHybrid>ExpectationAdjointGrad without the forward sweep: it starts from
final_state, the final_state output of QkerasHybrid>ExpectationAndState at the
same angles (exact only for that state). An empty final_state
[0, 2, 2**num_qubits] (no states kept) runs the forward sweep again.
d_angles[b, a] = sum_o upstream[b, o] d<O_o>/d angles[b, a].
)doc");

}  // namespace qkh
