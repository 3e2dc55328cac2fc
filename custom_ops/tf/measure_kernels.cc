// OpKernels of the measurement ops (measure_ops.cc): probabilities, states,
// samples and sampled expectations of a compiled circuit's final state,
// with the adjoint gradients of probabilities and states.
#include <vector>

#include "measure_common.h"

namespace qkh {

// The final states of `lanes` samples from row b, to `states`.
template <typename T, typename Sim>
static void RunToFinalStates(Sim* sim, const Program<T>& program, const T* angles,
                             int64_t num_angles, int lanes, int chunks,
                             const ParallelChunks& parallel, std::vector<T>* states) {
  thread_local std::vector<T> expectations;  // of the program's observables: unused
  expectations.resize(static_cast<size_t>(Sim::kLanes) * std::max(program.num_observables, 1));
  sim->Expectations(angles, num_angles, lanes, expectations.data(), chunks, parallel);
  states->resize(static_cast<size_t>(lanes) * 2 * (size_t{1} << program.num_qubits));
  sim->StoreState(lanes, states->data());
}

// Probabilities (kGrad false) or ProbabilitiesAdjointGrad (true): inputs
// 0..5 program, 6 angles, 7 qubits [, 8 upstream].
template <typename T, bool kGrad>
class ProbabilitiesOp : public ReadoutOpBase<T> {
 public:
  using ReadoutOpBase<T>::ReadoutOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    std::vector<int> qubits;
    if (!ValidateQubits(c, 7, program.num_qubits, &qubits)) return;
    const int k = static_cast<int>(qubits.size());
    const uint64_t size = uint64_t{1} << program.num_qubits, outcomes = uint64_t{1} << k;
    if (kGrad && !ValidateMatrix<T>(c, 8, "upstream", batch, static_cast<int64_t>(outcomes),
                                    "batch, 2**len(qubits)"))
      return;
    Tensor* out = AllocateReadout<T>(c, kGrad, angles, "probabilities",
                                     {batch, static_cast<int64_t>(outcomes)});
    if (out == nullptr) return;
    const BitGather gather = BitGather::MostSignificantFirst(program.num_qubits, qubits);
    const T* a = angles.flat<T>().data();
    const T* u = kGrad ? c->input(8).flat<T>().data() : nullptr;
    T* o = out->flat<T>().data();
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      thread_local std::vector<T> states;
      RunToFinalStates(sim, program, a + b * num_angles, num_angles, lanes, chunks, parallel,
                       &states);
      if (kGrad) {
        // d p[m] = 2 Re <psi| P_m d psi>: the co-state D psi, D the diagonal
        // of upstream[marginal index of x].
        thread_local std::vector<T> costate;
        costate.resize(states.size());
        for (int s = 0; s < lanes; ++s) {
          const T* psi = states.data() + s * 2 * size;
          T* co = costate.data() + s * 2 * size;
          const T* up = u + (b + s) * outcomes;
          parallel(chunks, [&](int chunk) {
            uint64_t x0, x1;
            ChunkRange(size, chunks, chunk, &x0, &x1);
            for (uint64_t x = x0; x < x1; ++x) {
              const T d = up[gather(x)];
              co[x] = d * psi[x];
              co[size + x] = d * psi[size + x];
            }
          });
        }
        StoreGradient(lanes, num_angles, o + b * num_angles, [&](double* grad) {
          sim->GradientFromCostate(states.data(), costate.data(), T{1}, a + b * num_angles,
                                   num_angles, lanes, grad, chunks, parallel);
        });
        return;
      }
      thread_local std::vector<double> marginal, scratch;
      marginal.resize(outcomes);
      for (int s = 0; s < lanes; ++s) {
        MarginalProbabilities(states.data() + s * 2 * size, size, gather, marginal.data(),
                              outcomes, chunks, parallel, &scratch);
        T* row = o + (b + s) * outcomes;
        for (uint64_t m = 0; m < outcomes; ++m) row[m] = static_cast<T>(marginal[m]);
      }
    };
    this->ForEachSample(c, program, batch, run, /*adjoint=*/kGrad);
    if (!c->status().ok()) return;
    CheckMatrixFinite<T>(c, *out, kGrad ? "d_angles" : "probabilities",
                         kGrad ? num_angles : static_cast<int64_t>(outcomes));
  }
};

// State (kGrad false): inputs 0..5, 6 angles. StateAdjointGrad (true):
// + 7 state (the forward's output), 8 upstream; no forward sweep.
template <typename T, bool kGrad>
class StateOp : public ReadoutOpBase<T> {
 public:
  using ReadoutOpBase<T>::ReadoutOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    const int64_t size = int64_t{1} << program.num_qubits;
    if (kGrad && (!ValidateState(c, program, c->input(7), batch, "state") ||
                  !ValidateState(c, program, c->input(8), batch, "upstream")))
      return;
    Tensor* out = AllocateReadout<T>(c, kGrad, angles, "state", {batch, 2, size});
    if (out == nullptr) return;
    const T* a = angles.flat<T>().data();
    T* o = out->flat<T>().data();
    const T* psi = kGrad ? c->input(7).flat<T>().data() : nullptr;
    const T* up = kGrad ? c->input(8).flat<T>().data() : nullptr;
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      if (kGrad) {
        // A real loss L of the state: dL = 2 Re <g/2| d psi>, g = dL/dRe psi + i dL/dIm psi.
        StoreGradient(lanes, num_angles, o + b * num_angles, [&](double* grad) {
          sim->GradientFromCostate(psi + b * 2 * size, up + b * 2 * size, T{0.5},
                                   a + b * num_angles, num_angles, lanes, grad, chunks, parallel);
        });
        return;
      }
      thread_local std::vector<T> expectations;
      expectations.resize(static_cast<size_t>(std::decay_t<decltype(*sim)>::kLanes) *
                          std::max(program.num_observables, 1));
      sim->Expectations(a + b * num_angles, num_angles, lanes, expectations.data(), chunks,
                        parallel);
      sim->StoreState(lanes, o + b * 2 * size);
    };
    this->ForEachSample(c, program, batch, run, /*adjoint=*/kGrad);
    if (!c->status().ok()) return;
    if (kGrad)
      CheckMatrixFinite<T>(c, *out, "d_angles", num_angles);
    else
      CheckResultFinite<T>(c, *out, "state", [size](int64_t i) { return StateIndex(i, size); });
  }
};

// Sample: inputs 0..5, 6 angles, 7 qubits, 8 shots, 9 seed ->
// samples int32 [batch, shots, k].
template <typename T>
class SampleOp : public ReadoutOpBase<T> {
 public:
  using ReadoutOpBase<T>::ReadoutOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    std::vector<int> qubits;
    int32_t shots = 0;
    Philox4x32 generator;
    if (!ValidateQubits(c, 7, program.num_qubits, &qubits) || !ValidateShots(c, 8, &shots) ||
        !ValidateSeed(c, 9, &generator))
      return;
    const int k = static_cast<int>(qubits.size());
    const uint64_t size = uint64_t{1} << program.num_qubits, outcomes = uint64_t{1} << k;
    Tensor* out = AllocateReadout<int32_t>(c, false, angles, "samples", {batch, shots, k});
    if (out == nullptr) return;
    const BitGather gather = BitGather::MostSignificantFirst(program.num_qubits, qubits);
    const T* a = angles.flat<T>().data();
    int32_t* o = out->flat<int32_t>().data();
    UnsampledRows unsampled(batch);
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      thread_local std::vector<T> states;
      thread_local std::vector<double> cdf, scratch;
      thread_local std::vector<uint64_t> guide;
      RunToFinalStates(sim, program, a + b * num_angles, num_angles, lanes, chunks, parallel,
                       &states);
      cdf.resize(outcomes);
      for (int s = 0; s < lanes; ++s) {
        const int64_t row = b + s;
        MarginalProbabilities(states.data() + s * 2 * size, size, gather, cdf.data(), outcomes,
                              chunks, parallel, &scratch);
        CumulativeSum(cdf.data(), outcomes);
        if (unsampled.Sampleable(row, cdf[outcomes - 1]))
          DrawSamples(generator, row, shots, k, cdf.data(), chunks, parallel, &guide,
                      o + row * shots * k);
      }
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (const int64_t row = unsampled.First(); row >= 0)
      FailBadDistribution<T>(c, row, unsampled.Total(row));
  }
};

// SampledExpectation: inputs 0..5, 6 angles, 7 shots, 8 seed ->
// expectations [batch, num_observables].
template <typename T>
class SampledExpectationOp : public ReadoutOpBase<T> {
 public:
  using ReadoutOpBase<T>::ReadoutOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    int32_t shots = 0;
    Philox4x32 generator;
    if (!ValidateShots(c, 7, &shots) || !ValidateSeed(c, 8, &generator)) return;
    const int num_obs = program.num_observables;
    Tensor* out = AllocateReadout<T>(c, false, angles, "expectations", {batch, num_obs});
    if (out == nullptr) return;
    const MeasurementSettings<T> settings(program, program.num_qubits);
    const uint64_t size = uint64_t{1} << program.num_qubits;
    const T* a = angles.flat<T>().data();
    T* o = out->flat<T>().data();
    UnsampledRows unsampled(batch);
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      thread_local std::vector<T> states, rotated;
      thread_local std::vector<double> cdf, scratch, sums;
      thread_local std::vector<int64_t> counts;  // [chunk][outcome or term]
      thread_local std::vector<uint64_t> guide;
      RunToFinalStates(sim, program, a + b * num_angles, num_angles, lanes, chunks, parallel,
                       &states);
      sums.resize(num_obs);
      for (int s = 0; s < lanes; ++s) {
        const int64_t row = b + s;
        std::copy(settings.exact.begin(), settings.exact.end(), sums.begin());
        for (size_t g = 0; g < settings.groups.size(); ++g) {
          const T* psi = states.data() + s * 2 * size;
          const PauliGroup& group = settings.groups[g];
          if (group.x_mask != 0) {
            rotated.assign(psi, psi + 2 * size);
            RotateToBasis(rotated.data(), program.num_qubits, group.x_mask, group.z_mask,
                          chunks, parallel);
            psi = rotated.data();
          }
          const uint64_t outcomes = uint64_t{1} << settings.qubits[g].size();
          cdf.resize(outcomes);
          MarginalProbabilities(psi, size, settings.gathers[g], cdf.data(), outcomes, chunks,
                                parallel, &scratch);
          CumulativeSum(cdf.data(), outcomes);
          if (!unsampled.Sampleable(row, cdf[outcomes - 1])) break;
          settings.EstimateGroup(g, generator, row, shots, cdf.data(), chunks, parallel, &guide,
                                 &counts, sums.data());
        }
        for (int i = 0; i < num_obs; ++i) o[row * num_obs + i] = static_cast<T>(sums[i]);
      }
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (const int64_t row = unsampled.First(); row >= 0)
      return FailBadDistribution<T>(c, row, unsampled.Total(row));
    CheckMatrixFinite<T>(c, *out, "expectations", num_obs);
  }
};

#define REGISTER_ONE(NAME, T, KERNEL) \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU).TypeConstraint<T>("T"), KERNEL)
#define REGISTER(T)                                                                        \
  REGISTER_ONE("QkerasHybrid>Probabilities", T, (ProbabilitiesOp<T, false>));              \
  REGISTER_ONE("QkerasHybrid>ProbabilitiesAdjointGrad", T, (ProbabilitiesOp<T, true>));    \
  REGISTER_ONE("QkerasHybrid>State", T, (StateOp<T, false>));                              \
  REGISTER_ONE("QkerasHybrid>StateAdjointGrad", T, (StateOp<T, true>));                    \
  REGISTER_ONE("QkerasHybrid>Sample", T, SampleOp<T>);                                     \
  REGISTER_ONE("QkerasHybrid>SampledExpectation", T, SampledExpectationOp<T>);
REGISTER(float)
REGISTER(double)
#undef REGISTER_ONE
#undef REGISTER

}  // namespace qkh
