// OpKernels: validate the inputs, decode the program once per call, and run
// the simulator over the batch on TF's CPU thread pool.
#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace qkh {

// What a kernel computes besides Expectation / ExpectationAdjointGrad, which
// fixes its inputs after the program (0..5):
//   kPlain       angles (6) [, upstream (7)]
//   kFromState   initial_state (6), angles (7) [, upstream (8)]; the gradient
//                also outputs d_initial_state first
//   kFinalState  the forward: angles (6), and outputs the final state too
//                (ExpectationAndState); the gradient: angles (6),
//                final_state (7), upstream (8), and no forward sweep
//                (ExpectationAdjointGradFromFinalState)
enum class Variant { kPlain, kFromState, kFinalState };

// Expectation, ExpectationFromState or ExpectationAndState (see Variant).
template <typename T, Variant kVariant>
class ExpectationOp : public ExpectationOpBase<T> {
 public:
  explicit ExpectationOp(OpKernelConstruction* c) : ExpectationOpBase<T>(c) {
    if (kVariant == Variant::kFinalState)
      OP_REQUIRES_OK(c, c->GetAttr("max_state_bytes", &max_state_bytes_));
  }

  void Compute(OpKernelContext* c) override {
    constexpr bool kFromState = kVariant == Variant::kFromState;
    constexpr int kAngles = kFromState ? 7 : 6;
    const std::shared_ptr<const Program<T>> shared = this->Prepare(c, kAngles);
    if (shared == nullptr) return;
    const Program<T>& program = *shared;
    const Tensor& angles = c->input(kAngles);
    const int64_t batch = angles.dim_size(0);
    const int64_t num_angles = angles.dim_size(1);
    if (kFromState && !ValidateState(c, program, c->input(6), batch, "initial_state")) return;
    const int num_obs = program.num_observables;
    Tensor* out = AllocateOutput<T>(c, 0, "expectations", {batch, num_obs});
    if (out == nullptr) return;
    const int64_t size = int64_t{1} << program.num_qubits;
    Tensor* final_state = nullptr;
    // A graph that only needs the expectations (inference) skips the copy.
    if (kVariant == Variant::kFinalState && c->output_required(1)) {
      final_state = AllocateOutput<T>(c, 1, "final_state",
                                      {KeepsStates(batch, size) ? batch : 0, 2, size});
      if (final_state == nullptr) return;
    }
    T* psi_out = final_state != nullptr && final_state->NumElements() > 0
                     ? final_state->flat<T>().data()
                     : nullptr;
    // Nothing to compute: also spares a batch of empty rows (angles of shape
    // [2**40, 0] are a valid tensor) a simulation per row.
    if (out->NumElements() == 0 && psi_out == nullptr) return;
    const T* psi = kFromState ? c->input(6).flat<T>().data() : nullptr;
    const T* a = angles.flat<T>().data();
    T* e = out->flat<T>().data();
    FirstIndex bad_state;
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      sim->Expectations(a + b * num_angles, num_angles, lanes, e + b * num_obs, chunks, parallel,
                        psi == nullptr ? nullptr : psi + b * 2 * size);
      if (psi_out == nullptr) return;
      T* group = psi_out + b * 2 * size;
      sim->StoreState(lanes, group);
      // Only a non-unitary constant gate (gate_data) can blow it up.
      const int64_t i = FirstNonFiniteIn(group, lanes * 2 * size, chunks, parallel);
      if (i >= 0) bad_state.Offer(b * 2 * size + i);
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (!CheckResultFinite<T>(c, *out, "expectations",
                              [num_obs](int64_t i) { return Index2(i, num_obs); }))
      return;
    if (const int64_t i = bad_state.Get(); i >= 0)
      FailResultNotFinite<T>(c, "final_state" + StateIndex(i, size), psi_out[i]);
  }

 private:
  // Whether ExpectationAndState outputs the final states of this batch:
  // the gradient keeps them until it runs, so past max_state_bytes (-1: an
  // eighth of this machine's memory) it outputs none and the gradient runs
  // the forward sweep again, in a few states per thread.
  bool KeepsStates(int64_t batch, int64_t size) const {
    const double budget =
        max_state_bytes_ >= 0 ? static_cast<double>(max_state_bytes_) : PhysicalMemoryBytes() / 8;
    return static_cast<double>(batch) * 2 * static_cast<double>(size) * sizeof(T) <= budget;
  }

  int64_t max_state_bytes_ = -1;
};

// ExpectationAdjointGrad, ExpectationFromStateAdjointGrad or
// ExpectationAdjointGradFromFinalState (see Variant).
template <typename T, Variant kVariant>
class ExpectationAdjointGradOp : public ExpectationOpBase<T> {
 public:
  explicit ExpectationAdjointGradOp(OpKernelConstruction* c)
      : ExpectationOpBase<T>(c) {}

  void Compute(OpKernelContext* c) override {
    constexpr bool kFromState = kVariant == Variant::kFromState;
    constexpr bool kFinalState = kVariant == Variant::kFinalState;
    constexpr int kAngles = kFromState ? 7 : 6;
    constexpr int kState = kFromState ? 6 : 7;  // initial_state or final_state
    constexpr int kUpstream = kVariant == Variant::kPlain ? 7 : 8;
    const std::shared_ptr<const Program<T>> shared = this->Prepare(c, kAngles);
    if (shared == nullptr) return;
    const Program<T>& program = *shared;
    const Tensor& angles = c->input(kAngles);
    const int64_t batch = angles.dim_size(0);
    const int64_t num_angles = angles.dim_size(1);
    const int num_obs = program.num_observables;
    if (!ValidateUpstream<T>(c, c->input(kUpstream), batch, num_obs)) return;
    if (kFromState && !ValidateState(c, program, c->input(kState), batch, "initial_state"))
      return;
    // An empty final_state: the forward op kept no states (KeepsStates), so
    // the forward sweep runs again. Its values are checked one sample group
    // at a time, below, while in cache.
    const bool kept = kFinalState && !(c->input(kState).dims() == 3 &&
                                       c->input(kState).dim_size(0) == 0);
    if (kFinalState &&
        !ValidateState(c, program, c->input(kState), kept ? batch : 0, "final_state",
                       /*check_values=*/false,
                       " (or [0, 2, 2**num_qubits] when ExpectationAndState kept no states)"))
      return;
    const int64_t size = int64_t{1} << program.num_qubits;
    Tensor* d_state = nullptr;
    if (kFromState) OP_REQUIRES_OK(c, c->allocate_output(0, c->input(6).shape(), &d_state));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(kFromState ? 1 : 0, angles.shape(), &out));
    if (out->NumElements() == 0 && (d_state == nullptr || d_state->NumElements() == 0))
      return;  // nothing to compute (see ExpectationOp)
    const T* psi = kFromState || kept ? c->input(kState).flat<T>().data() : nullptr;
    T* d_psi = d_state == nullptr ? nullptr : d_state->flat<T>().data();
    const T* a = angles.flat<T>().data();
    const T* u = c->input(kUpstream).flat<T>().data();
    T* d = out->flat<T>().data();
    FirstIndex bad_state;
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      thread_local std::vector<double> grad;
      grad.assign(lanes * num_angles, 0.0);
      if (kept) {
        const T* group = psi + b * 2 * size;
        const int64_t i = FirstNonFiniteIn(group, lanes * 2 * size, chunks, parallel);
        if (i >= 0) return bad_state.Offer(b * 2 * size + i);
        sim->GradientFromFinalState(group, a + b * num_angles, num_angles, lanes, u + b * num_obs,
                                    grad.data(), chunks, parallel);
      } else {
        sim->Gradient(a + b * num_angles, num_angles, lanes, u + b * num_obs, grad.data(), chunks,
                      parallel, kFromState ? psi + b * 2 * size : nullptr,
                      d_psi == nullptr ? nullptr : d_psi + b * 2 * size);
      }
      for (int64_t i = 0; i < lanes * num_angles; ++i)
        d[b * num_angles + i] = static_cast<T>(grad[i]);
    };
    this->ForEachSample(c, program, batch, run, /*adjoint=*/true);
    if (!c->status().ok()) return;
    if (const int64_t i = bad_state.Get(); i >= 0)
      return FailStateNotFinite<T>(c, c->input(kState), "final_state", i);
    if (!CheckResultFinite<T>(c, *out, "d_angles",
                              [num_angles](int64_t i) { return Index2(i, num_angles); }))
      return;
    if (d_state != nullptr)
      CheckResultFinite<T>(c, *d_state, "d_initial_state",
                           [size](int64_t i) { return StateIndex(i, size); });
  }
};

#define REGISTER_ONE(NAME, T, KERNEL) \
  REGISTER_KERNEL_BUILDER(              \
      Name(NAME).Device(DEVICE_CPU).TypeConstraint<T>("T"), KERNEL)
#define REGISTER(T)                                                                      \
  REGISTER_ONE("QkerasHybrid>Expectation", T, (ExpectationOp<T, Variant::kPlain>));      \
  REGISTER_ONE("QkerasHybrid>ExpectationAdjointGrad", T,                                 \
               (ExpectationAdjointGradOp<T, Variant::kPlain>));                          \
  REGISTER_ONE("QkerasHybrid>ExpectationFromState", T, (ExpectationOp<T, Variant::kFromState>)); \
  REGISTER_ONE("QkerasHybrid>ExpectationFromStateAdjointGrad", T,                        \
               (ExpectationAdjointGradOp<T, Variant::kFromState>));                      \
  REGISTER_ONE("QkerasHybrid>ExpectationAndState", T,                                    \
               (ExpectationOp<T, Variant::kFinalState>));                                \
  REGISTER_ONE("QkerasHybrid>ExpectationAdjointGradFromFinalState", T,                   \
               (ExpectationAdjointGradOp<T, Variant::kFinalState>));
REGISTER(float)
REGISTER(double)
#undef REGISTER_ONE
#undef REGISTER

}  // namespace qkh
