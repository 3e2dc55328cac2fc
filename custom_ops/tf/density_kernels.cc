// OpKernels of the density-matrix ops (density_ops.cc): exact noisy
// simulation of a density program (program.h) with adjoint gradients,
// marginal probabilities, samples and sampled expectations with readout
// errors. The simulator runs vec(rho) as a state on 2n qubits; the
// read-outs are in custom_ops/simulator/density.h.
#include <numeric>
#include <string>
#include <vector>

#include "../simulator/density.h"
#include "measure_common.h"

namespace qkh {

// readout (input `index`): float64 [n, 2] of probabilities, (P(read 1 | 0),
// P(read 0 | 1)) per physical qubit.
static bool ValidateReadout(OpKernelContext* c, int index, int n, const double** out) {
  const Tensor& t = c->input(index);
  if (t.dims() != 2 || t.dim_size(0) != n || t.dim_size(1) != 2) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        "readout must have shape [n, 2] = ", ShapeString({n, 2}),
        " ((P(read 1 | 0), P(read 0 | 1)) per physical qubit, zeros for no readout error), got ",
        t.shape().DebugString()));
    return false;
  }
  const double* r = t.flat<double>().data();
  for (int64_t i = 0; i < t.NumElements(); ++i)
    if (!(r[i] >= 0 && r[i] <= 1)) {
      c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
          "readout", Index2(i, 2), " = ", Num(r[i]),
          " must be a probability in [0, 1] (", i % 2 == 0 ? "P(read 1 | 0)" : "P(read 0 | 1)",
          " of qubit ", i / 2, ")"));
      return false;
    }
  *out = r;
  return true;
}

// The readout errors of `qubits`, two per qubit as ApplyReadoutErrors takes
// them, from the validated readout input.
static std::vector<double> ReadoutErrorsOf(const double* readout, const std::vector<int>& qubits) {
  std::vector<double> errors;
  for (int q : qubits) errors.insert(errors.end(), {readout[2 * q], readout[2 * q + 1]});
  return errors;
}

// What the physical register size is called in messages.
constexpr char kPhysicalQubits[] = "n = num_qubits / 2 (the physical qubits)";

// The density ops' kernels decode programs in density mode.
template <typename T>
class DensityOpBase : public ReadoutOpBase<T> {
 public:
  explicit DensityOpBase(OpKernelConstruction* c) : ReadoutOpBase<T>(c, ProgramMode::kDensity) {}
};

// DensityExpectation (kGrad false): inputs 0..5 program, 6 angles ->
// expectations [batch, O]. DensityExpectationAdjointGrad (true): + 7
// upstream -> d_angles [batch, A].
template <typename T, bool kGrad>
class DensityExpectationOp : public DensityOpBase<T> {
 public:
  using DensityOpBase<T>::DensityOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    const int num_obs = program.num_observables;
    if (kGrad && !ValidateUpstream<T>(c, c->input(7), batch, num_obs)) return;
    Tensor* out = AllocateReadout<T>(c, kGrad, angles, "expectations", {batch, num_obs});
    if (out == nullptr) return;
    const T* a = angles.flat<T>().data();
    const T* u = kGrad ? c->input(7).flat<T>().data() : nullptr;
    T* o = out->flat<T>().data();
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      sim->ForwardSweep(a + b * num_angles, num_angles, lanes, chunks, parallel, kGrad);
      if (!kGrad) return DensityExpectations(sim, program, lanes, o + b * num_obs);
      DensityObservableCostate(sim, program, u + b * num_obs, lanes, chunks, parallel);
      StoreGradient(lanes, num_angles, o + b * num_angles, [&](double* grad) {
        sim->BackwardSweep(grad, num_angles, lanes, chunks, parallel);
      });
    };
    this->ForEachSample(c, program, batch, run, /*adjoint=*/kGrad);
    if (!c->status().ok()) return;
    CheckMatrixFinite<T>(c, *out, kGrad ? "d_angles" : "expectations",
                         kGrad ? num_angles : num_obs);
  }
};

// DensityProbabilities (kGrad false): inputs 0..5, 6 angles, 7 qubits ->
// probabilities [batch, 2**k]. DensityProbabilitiesAdjointGrad (true): + 8
// upstream [batch, 2**k] -> d_angles.
template <typename T, bool kGrad>
class DensityProbabilitiesOp : public DensityOpBase<T> {
 public:
  using DensityOpBase<T>::DensityOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    const int n = program.num_qubits / 2;
    std::vector<int> qubits;
    if (!ValidateQubits(c, 7, n, &qubits, kPhysicalQubits)) return;
    const uint64_t outcomes = uint64_t{1} << qubits.size();
    if (kGrad && !ValidateMatrix<T>(c, 8, "upstream", batch, static_cast<int64_t>(outcomes),
                                    "batch, 2**len(qubits)"))
      return;
    Tensor* out = AllocateReadout<T>(c, kGrad, angles, "probabilities",
                                     {batch, static_cast<int64_t>(outcomes)});
    if (out == nullptr) return;
    const BitGather gather = BitGather::MostSignificantFirst(n, qubits);
    const T* a = angles.flat<T>().data();
    const T* u = kGrad ? c->input(8).flat<T>().data() : nullptr;
    T* o = out->flat<T>().data();
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      constexpr int W = std::decay_t<decltype(*sim)>::kLanes;
      sim->ForwardSweep(a + b * num_angles, num_angles, lanes, chunks, parallel, kGrad);
      if (kGrad) {
        DensityMarginalCostate(sim, n, gather, outcomes, u + b * outcomes, lanes, chunks,
                               parallel);
        StoreGradient(lanes, num_angles, o + b * num_angles, [&](double* grad) {
          sim->BackwardSweep(grad, num_angles, lanes, chunks, parallel);
        });
        return;
      }
      thread_local std::vector<double> marginals;
      marginals.resize(W * outcomes);
      DensityMarginals(sim, n, gather, outcomes, marginals.data());
      for (int s = 0; s < lanes; ++s)
        for (uint64_t m = 0; m < outcomes; ++m)
          o[(b + s) * outcomes + m] = static_cast<T>(marginals[s * outcomes + m]);
    };
    this->ForEachSample(c, program, batch, run, /*adjoint=*/kGrad);
    if (!c->status().ok()) return;
    CheckMatrixFinite<T>(c, *out, kGrad ? "d_angles" : "probabilities",
                         kGrad ? num_angles : static_cast<int64_t>(outcomes));
  }
};

// A marginal distribution as sampled: negative rounding residue cleared,
// readout errors applied, then summed up (cdf). Returns the total.
static double SamplingCdf(const double* marginal, uint64_t outcomes,
                          const std::vector<int>& positions, const std::vector<double>& errors,
                          std::vector<double>* cdf) {
  cdf->resize(outcomes);
  for (uint64_t m = 0; m < outcomes; ++m) (*cdf)[m] = std::max(0.0, marginal[m]);
  ApplyReadoutErrors(cdf->data(), outcomes, positions, errors);
  CumulativeSum(cdf->data(), outcomes);
  return (*cdf)[outcomes - 1];
}

// Fails when a row's probabilities sum to zero or overflow: nothing can be
// sampled from them.
static void FailBadDensity(OpKernelContext* c, int64_t row, double total) {
  c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
      "the final density matrix of batch row ", row, " has trace ", Num(total),
      ": cannot sample from it (a channel that is not trace-preserving?)"));
}

// DensitySample: inputs 0..5, 6 angles, 7 qubits, 8 shots, 9 seed, 10
// readout -> samples int32 [batch, shots, k].
template <typename T>
class DensitySampleOp : public DensityOpBase<T> {
 public:
  using DensityOpBase<T>::DensityOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    const int n = program.num_qubits / 2;
    std::vector<int> qubits;
    int32_t shots = 0;
    Philox4x32 generator;
    const double* readout = nullptr;
    if (!ValidateQubits(c, 7, n, &qubits, kPhysicalQubits) || !ValidateShots(c, 8, &shots) ||
        !ValidateSeed(c, 9, &generator) || !ValidateReadout(c, 10, n, &readout))
      return;
    const int k = static_cast<int>(qubits.size());
    const uint64_t outcomes = uint64_t{1} << k;
    Tensor* out = AllocateReadout<int32_t>(c, false, angles, "samples", {batch, shots, k});
    if (out == nullptr) return;
    const BitGather gather = BitGather::MostSignificantFirst(n, qubits);
    // qubits[j] is bit k - 1 - j of an outcome.
    std::vector<int> positions(k);
    for (int j = 0; j < k; ++j) positions[j] = k - 1 - j;
    const std::vector<double> errors = ReadoutErrorsOf(readout, qubits);
    const T* a = angles.flat<T>().data();
    int32_t* o = out->flat<int32_t>().data();
    UnsampledRows unsampled(batch);
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      constexpr int W = std::decay_t<decltype(*sim)>::kLanes;
      thread_local std::vector<double> marginals, cdf;
      thread_local std::vector<uint64_t> guide;
      sim->ForwardSweep(a + b * num_angles, num_angles, lanes, chunks, parallel, false);
      marginals.resize(W * outcomes);
      DensityMarginals(sim, n, gather, outcomes, marginals.data());
      for (int s = 0; s < lanes; ++s) {
        const int64_t row = b + s;
        const double total =
            SamplingCdf(marginals.data() + s * outcomes, outcomes, positions, errors, &cdf);
        if (unsampled.Sampleable(row, total))
          DrawSamples(generator, row, shots, k, cdf.data(), chunks, parallel, &guide,
                      o + row * shots * k);
      }
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (const int64_t row = unsampled.First(); row >= 0)
      FailBadDensity(c, row, unsampled.Total(row));
  }
};

// DensitySampledExpectation: inputs 0..5, 6 angles, 7 shots, 8 seed, 9
// readout -> expectations [batch, num_observables].
template <typename T>
class DensitySampledExpectationOp : public DensityOpBase<T> {
 public:
  using DensityOpBase<T>::DensityOpBase;

  void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                      const Tensor& angles) override {
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    const int n = program.num_qubits / 2;
    int32_t shots = 0;
    Philox4x32 generator;
    const double* readout = nullptr;
    if (!ValidateShots(c, 7, &shots) || !ValidateSeed(c, 8, &generator) ||
        !ValidateReadout(c, 9, n, &readout))
      return;
    const int num_obs = program.num_observables;
    Tensor* out = AllocateReadout<T>(c, false, angles, "expectations", {batch, num_obs});
    if (out == nullptr) return;
    const MeasurementSettings<T> settings(program, n);
    const size_t num_groups = settings.groups.size();
    // Per group: its qubits' bit positions (ascending) and readout errors.
    std::vector<std::vector<int>> positions(num_groups);
    std::vector<std::vector<double>> errors(num_groups);
    for (size_t g = 0; g < num_groups; ++g) {
      positions[g].resize(settings.qubits[g].size());
      std::iota(positions[g].begin(), positions[g].end(), 0);
      errors[g] = ReadoutErrorsOf(readout, settings.qubits[g]);
    }
    const T* a = angles.flat<T>().data();
    T* o = out->flat<T>().data();
    UnsampledRows unsampled(batch);
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      constexpr int W = std::decay_t<decltype(*sim)>::kLanes;
      thread_local std::vector<double> marginals, cdf, sums;
      thread_local std::vector<int64_t> counts;
      thread_local std::vector<uint64_t> guide;
      sim->ForwardSweep(a + b * num_angles, num_angles, lanes, chunks, parallel, false);
      sums.resize(W * num_obs);
      for (int s = 0; s < lanes; ++s)
        std::copy(settings.exact.begin(), settings.exact.end(), sums.begin() + s * num_obs);
      bool bad[W] = {};
      uint64_t basis_x = 0, basis_z = 0;  // the group the state is rotated to
      for (size_t g = 0; g < num_groups; ++g) {
        const PauliGroup& group = settings.groups[g];
        DensityChangeBasis(sim, n, basis_x, basis_z, group.x_mask, group.z_mask, chunks,
                           parallel);
        basis_x = group.x_mask;
        basis_z = group.z_mask;
        const uint64_t outcomes = uint64_t{1} << settings.qubits[g].size();
        marginals.resize(W * outcomes);
        DensityMarginals(sim, n, settings.gathers[g], outcomes, marginals.data());
        for (int s = 0; s < lanes; ++s) {
          if (bad[s]) continue;
          const int64_t row = b + s;
          const double total = SamplingCdf(marginals.data() + s * outcomes, outcomes,
                                           positions[g], errors[g], &cdf);
          if (!unsampled.Sampleable(row, total)) {
            bad[s] = true;
            continue;
          }
          settings.EstimateGroup(g, generator, row, shots, cdf.data(), chunks, parallel, &guide,
                                 &counts, sums.data() + s * num_obs);
        }
      }
      for (int s = 0; s < lanes; ++s)
        for (int i = 0; i < num_obs; ++i)
          o[(b + s) * num_obs + i] = static_cast<T>(sums[s * num_obs + i]);
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (const int64_t row = unsampled.First(); row >= 0)
      return FailBadDensity(c, row, unsampled.Total(row));
    CheckMatrixFinite<T>(c, *out, "expectations", num_obs);
  }
};

#define REGISTER_ONE(NAME, T, KERNEL) \
  REGISTER_KERNEL_BUILDER(Name(NAME).Device(DEVICE_CPU).TypeConstraint<T>("T"), KERNEL)
#define REGISTER(T)                                                                           \
  REGISTER_ONE("QkerasHybrid>DensityExpectation", T, (DensityExpectationOp<T, false>));       \
  REGISTER_ONE("QkerasHybrid>DensityExpectationAdjointGrad", T,                               \
               (DensityExpectationOp<T, true>));                                              \
  REGISTER_ONE("QkerasHybrid>DensityProbabilities", T, (DensityProbabilitiesOp<T, false>));   \
  REGISTER_ONE("QkerasHybrid>DensityProbabilitiesAdjointGrad", T,                             \
               (DensityProbabilitiesOp<T, true>));                                            \
  REGISTER_ONE("QkerasHybrid>DensitySample", T, DensitySampleOp<T>);                          \
  REGISTER_ONE("QkerasHybrid>DensitySampledExpectation", T, DensitySampledExpectationOp<T>);
REGISTER(float)
REGISTER(double)
#undef REGISTER_ONE
#undef REGISTER

}  // namespace qkh
