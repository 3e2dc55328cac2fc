// OpKernels of the measurement ops (measure_ops.cc): probabilities, states,
// samples and sampled expectations of a compiled circuit's final state,
// with the adjoint gradients of probabilities and states.
#include <memory>
#include <string>
#include <vector>

#include "../simulator/measure.h"
#include "common.h"

namespace qkh {

// The measured qubits (input `index`): 1..n distinct register indices.
static bool ValidateQubits(OpKernelContext* c, int index, int num_qubits, std::vector<int>* out) {
  const Tensor& t = c->input(index);
  auto fail = [c](const std::string& msg) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(msg));
    return false;
  };
  if (t.dims() != 1 || t.NumElements() < 1 || t.NumElements() > num_qubits)
    return fail("qubits must be a vector of 1 to num_qubits = " + std::to_string(num_qubits) +
                " distinct register indices, got shape " + t.shape().DebugString());
  const auto q = t.flat<int32_t>();
  out->clear();
  for (int64_t j = 0; j < t.NumElements(); ++j) {
    if (q(j) < 0 || q(j) >= num_qubits)
      return fail("qubits[" + std::to_string(j) + "] = " + std::to_string(q(j)) +
                  " is out of range [0, " + std::to_string(num_qubits) + ")");
    for (int64_t i = 0; i < j; ++i)
      if (q(i) == q(j))
        return fail("qubits[" + std::to_string(j) + "] = " + std::to_string(q(j)) +
                    " repeats qubits[" + std::to_string(i) + "]: measured qubits must be distinct");
    out->push_back(q(j));
  }
  return true;
}

// shots (input `index`): a positive int32 scalar.
static bool ValidateShots(OpKernelContext* c, int index, int32_t* shots) {
  const Tensor& t = c->input(index);
  if (t.dims() != 0) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        "shots must be a scalar, got shape ", t.shape().DebugString()));
    return false;
  }
  *shots = t.scalar<int32_t>()();
  if (*shots <= 0) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        "shots must be positive, got ", *shots));
    return false;
  }
  return true;
}

// seed (input `index`): int64 [2], the key of the random stream.
static bool ValidateSeed(OpKernelContext* c, int index, Philox4x32* generator) {
  const Tensor& t = c->input(index);
  if (t.dims() != 1 || t.dim_size(0) != 2) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        "seed must have shape [2] (int64), got ", t.shape().DebugString()));
    return false;
  }
  const auto s = t.flat<int64_t>();
  *generator = Philox4x32::FromSeed(static_cast<uint64_t>(s(0)), static_cast<uint64_t>(s(1)));
  return true;
}

// A [batch, cols] input `name` (an upstream gradient), finite.
template <typename T>
static bool ValidateMatrix(OpKernelContext* c, int index, const char* name, int64_t rows,
                           int64_t cols, const char* what) {
  const Tensor& t = c->input(index);
  if (t.dims() != 2 || t.dim_size(0) != rows || t.dim_size(1) != cols) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        name, " must have shape ", ShapeString({rows, cols}), " (", what, "), got ",
        t.shape().DebugString()));
    return false;
  }
  const int64_t bad = FirstNonFinite(t.flat<T>().data(), t.NumElements());
  if (bad >= 0) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        name, Index2(bad, cols), " is not finite (",
        Num(static_cast<double>(t.flat<T>()(bad))), ")"));
    return false;
  }
  return true;
}

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
class ProbabilitiesOp : public ExpectationOpBase<T> {
 public:
  using ExpectationOpBase<T>::ExpectationOpBase;

  void Compute(OpKernelContext* c) override {
    const std::shared_ptr<const Program<T>> shared = this->Prepare(c);
    if (shared == nullptr) return;
    const Program<T>& program = *shared;
    const Tensor& angles = c->input(6);
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    std::vector<int> qubits;
    if (!ValidateQubits(c, 7, program.num_qubits, &qubits)) return;
    const int k = static_cast<int>(qubits.size());
    const uint64_t size = uint64_t{1} << program.num_qubits, outcomes = uint64_t{1} << k;
    if (kGrad && !ValidateMatrix<T>(c, 8, "upstream", batch, static_cast<int64_t>(outcomes),
                                    "batch, 2**len(qubits)"))
      return;
    Tensor* out = kGrad ? nullptr
                        : AllocateOutput<T>(c, 0, "probabilities",
                                            {batch, static_cast<int64_t>(outcomes)});
    if (kGrad) OP_REQUIRES_OK(c, c->allocate_output(0, angles.shape(), &out));
    if (out == nullptr || out->NumElements() == 0) return;
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
        thread_local std::vector<double> grad;
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
        grad.assign(lanes * num_angles, 0.0);
        sim->GradientFromCostate(states.data(), costate.data(), T{1}, a + b * num_angles,
                                 num_angles, lanes, grad.data(), chunks, parallel);
        for (int64_t i = 0; i < lanes * num_angles; ++i)
          o[b * num_angles + i] = static_cast<T>(grad[i]);
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
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    const int64_t cols = kGrad ? num_angles : static_cast<int64_t>(outcomes);
    CheckResultFinite<T>(c, *out, kGrad ? "d_angles" : "probabilities",
                         [cols](int64_t i) { return Index2(i, cols); });
  }
};

// State (kGrad false): inputs 0..5, 6 angles. StateAdjointGrad (true):
// + 7 state (the forward's output), 8 upstream; no forward sweep.
template <typename T, bool kGrad>
class StateOp : public ExpectationOpBase<T> {
 public:
  using ExpectationOpBase<T>::ExpectationOpBase;

  void Compute(OpKernelContext* c) override {
    const std::shared_ptr<const Program<T>> shared = this->Prepare(c);
    if (shared == nullptr) return;
    const Program<T>& program = *shared;
    const Tensor& angles = c->input(6);
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    const int64_t size = int64_t{1} << program.num_qubits;
    if (kGrad && (!ValidateState(c, program, c->input(7), batch, "state") ||
                  !ValidateState(c, program, c->input(8), batch, "upstream")))
      return;
    Tensor* out = nullptr;
    if (kGrad)
      OP_REQUIRES_OK(c, c->allocate_output(0, angles.shape(), &out));
    else
      out = AllocateOutput<T>(c, 0, "state", {batch, 2, size});
    if (out == nullptr || out->NumElements() == 0) return;
    const T* a = angles.flat<T>().data();
    T* o = out->flat<T>().data();
    const T* psi = kGrad ? c->input(7).flat<T>().data() : nullptr;
    const T* up = kGrad ? c->input(8).flat<T>().data() : nullptr;
    auto run = [&](auto* sim, int64_t b, int lanes, int chunks, const ParallelChunks& parallel) {
      if (kGrad) {
        // A real loss L of the state: dL = 2 Re <g/2| d psi>, g = dL/dRe psi + i dL/dIm psi.
        thread_local std::vector<double> grad;
        grad.assign(lanes * num_angles, 0.0);
        sim->GradientFromCostate(psi + b * 2 * size, up + b * 2 * size, T{0.5},
                                 a + b * num_angles, num_angles, lanes, grad.data(), chunks,
                                 parallel);
        for (int64_t i = 0; i < lanes * num_angles; ++i)
          o[b * num_angles + i] = static_cast<T>(grad[i]);
        return;
      }
      thread_local std::vector<T> expectations;
      expectations.resize(static_cast<size_t>(std::decay_t<decltype(*sim)>::kLanes) *
                          std::max(program.num_observables, 1));
      sim->Expectations(a + b * num_angles, num_angles, lanes, expectations.data(), chunks,
                        parallel);
      sim->StoreState(lanes, o + b * 2 * size);
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (kGrad)
      CheckResultFinite<T>(c, *out, "d_angles",
                           [num_angles](int64_t i) { return Index2(i, num_angles); });
    else
      CheckResultFinite<T>(c, *out, "state", [size](int64_t i) { return StateIndex(i, size); });
  }
};

// Draws shots [0, shots) of one row from the cumulative distribution cdf
// and calls record(chunk, shot, outcome); chunks split the shots. Shot s
// takes half s % 2 of the generator's block s / 2, whichever chunk draws it.
// More than kGuideOutcomes outcomes are searched through a guide table
// (BuildGuide), built in `guide`.
constexpr uint64_t kGuideOutcomes = 64;
template <typename Record>
static void DrawShots(const Philox4x32& generator, int64_t row, uint32_t stream, int32_t shots,
                      const double* cdf, uint64_t outcomes, int chunks,
                      const ParallelChunks& parallel, std::vector<uint64_t>* guide,
                      Record record) {
  const bool guided = outcomes > kGuideOutcomes;
  if (guided) {
    guide->resize(outcomes);
    BuildGuide(cdf, outcomes, guide->data());
  }
  const uint64_t* table = guided ? guide->data() : nullptr;
  parallel(chunks, [&](int chunk) {
    uint64_t s0, s1;
    ChunkRange(static_cast<uint64_t>(shots), chunks, chunk, &s0, &s1);
    constexpr int kPairs = Philox4x32::kBatchPairs;
    double u[2 * kPairs];
    // Pairs [p0, p1) hold shots [s0, s1); a chunk boundary may split a pair.
    const uint64_t p1 = (s1 + 1) / 2;
    for (uint64_t p = s0 / 2; p < p1; p += kPairs) {
      const int count = static_cast<int>(std::min<uint64_t>(kPairs, p1 - p));
      generator.UniformPairs(row, stream, static_cast<uint32_t>(p), count, u);
      const uint64_t first = std::max(s0, 2 * p), last = std::min(s1, 2 * (p + count));
      for (uint64_t s = first; s < last; ++s)
        record(chunk, s, guided ? SampleIndexGuided(cdf, table, outcomes, u[s - 2 * p])
                                : SampleIndex(cdf, outcomes, u[s - 2 * p]));
    }
  });
}

// Fails when a row's probabilities sum to zero or overflow (possible only
// with non-unitary constant gates): nothing can be sampled from them.
template <typename T>
static void FailBadDistribution(OpKernelContext* c, int64_t row, double total) {
  c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
      "the final state of batch row ", row, " has total probability ", Num(total),
      ": cannot sample from it (a non-unitary gate in gate_data?)"));
}

// Sample: inputs 0..5, 6 angles, 7 qubits, 8 shots, 9 seed ->
// samples int32 [batch, shots, k].
template <typename T>
class SampleOp : public ExpectationOpBase<T> {
 public:
  using ExpectationOpBase<T>::ExpectationOpBase;

  void Compute(OpKernelContext* c) override {
    const std::shared_ptr<const Program<T>> shared = this->Prepare(c);
    if (shared == nullptr) return;
    const Program<T>& program = *shared;
    const Tensor& angles = c->input(6);
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    std::vector<int> qubits;
    int32_t shots = 0;
    Philox4x32 generator;
    if (!ValidateQubits(c, 7, program.num_qubits, &qubits) || !ValidateShots(c, 8, &shots) ||
        !ValidateSeed(c, 9, &generator))
      return;
    const int k = static_cast<int>(qubits.size());
    const uint64_t size = uint64_t{1} << program.num_qubits, outcomes = uint64_t{1} << k;
    Tensor* out = AllocateOutput<int32_t>(c, 0, "samples", {batch, shots, k});
    if (out == nullptr || out->NumElements() == 0) return;
    const BitGather gather = BitGather::MostSignificantFirst(program.num_qubits, qubits);
    const T* a = angles.flat<T>().data();
    int32_t* o = out->flat<int32_t>().data();
    FirstIndex bad_row;
    std::vector<double> totals(batch);
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
        totals[row] = cdf[outcomes - 1];
        if (!(totals[row] > 0 && std::isfinite(totals[row]))) {
          bad_row.Offer(row);
          continue;
        }
        int32_t* samples = o + row * shots * k;
        DrawShots(generator, row, 0, shots, cdf.data(), outcomes, chunks, parallel, &guide,
                  [&](int, uint64_t shot, uint64_t m) {
                    // Bit j of a sample is qubits[j]: the MSB-first index read backwards.
                    for (int j = 0; j < k; ++j) samples[shot * k + j] = m >> (k - 1 - j) & 1;
                  });
      }
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (const int64_t row = bad_row.Get(); row >= 0)
      FailBadDistribution<T>(c, row, totals[row]);
  }
};

// SampledExpectation: inputs 0..5, 6 angles, 7 shots, 8 seed ->
// expectations [batch, num_observables].
template <typename T>
class SampledExpectationOp : public ExpectationOpBase<T> {
 public:
  using ExpectationOpBase<T>::ExpectationOpBase;

  void Compute(OpKernelContext* c) override {
    const std::shared_ptr<const Program<T>> shared = this->Prepare(c);
    if (shared == nullptr) return;
    const Program<T>& program = *shared;
    const Tensor& angles = c->input(6);
    const int64_t batch = angles.dim_size(0), num_angles = angles.dim_size(1);
    int32_t shots = 0;
    Philox4x32 generator;
    if (!ValidateShots(c, 7, &shots) || !ValidateSeed(c, 8, &generator)) return;
    const int num_obs = program.num_observables;
    Tensor* out = AllocateOutput<T>(c, 0, "expectations", {batch, num_obs});
    if (out == nullptr || out->NumElements() == 0) return;

    // Identity terms are exact; the others are grouped into settings.
    std::vector<const typename Program<T>::Term*> terms;
    std::vector<uint64_t> xs, zs;
    std::vector<double> exact(num_obs, 0.0);
    for (const auto* list : {&program.diagonal_terms, &program.offdiagonal_terms})
      for (const auto& term : *list) {
        if (term.x_mask == 0 && term.z_mask == 0) {
          exact[term.observable] += term.coeff;
          continue;
        }
        terms.push_back(&term);
        xs.push_back(term.x_mask);
        zs.push_back(term.z_mask);
      }
    const std::vector<PauliGroup> groups = GroupQubitWise(xs, zs);
    // Per group: the gather of its measured qubits (ascending, bit j = j-th
    // qubit) and each term's support among them.
    std::vector<BitGather> gathers;
    std::vector<std::vector<uint64_t>> local_masks(groups.size());
    std::vector<int> group_qubits_count;
    for (size_t g = 0; g < groups.size(); ++g) {
      std::vector<int> qs, positions;
      const uint64_t support = groups[g].x_mask | groups[g].z_mask;
      for (int q = 0; q < program.num_qubits; ++q)
        if (support >> q & 1) {
          positions.push_back(static_cast<int>(qs.size()));
          qs.push_back(q);
        }
      gathers.emplace_back(program.num_qubits, qs, positions);
      for (int t : groups[g].terms) local_masks[g].push_back(gathers[g](xs[t] | zs[t]));
      group_qubits_count.push_back(static_cast<int>(qs.size()));
    }
    const uint64_t size = uint64_t{1} << program.num_qubits;
    const T* a = angles.flat<T>().data();
    T* o = out->flat<T>().data();
    FirstIndex bad_row;
    std::vector<double> totals(batch);
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
        std::copy(exact.begin(), exact.end(), sums.begin());
        for (size_t g = 0; g < groups.size(); ++g) {
          const T* psi = states.data() + s * 2 * size;
          if (groups[g].x_mask != 0) {
            rotated.assign(psi, psi + 2 * size);
            RotateToBasis(rotated.data(), program.num_qubits, groups[g].x_mask, groups[g].z_mask,
                          chunks, parallel);
            psi = rotated.data();
          }
          const uint64_t outcomes = uint64_t{1} << group_qubits_count[g];
          cdf.resize(outcomes);
          MarginalProbabilities(psi, size, gathers[g], cdf.data(), outcomes, chunks, parallel,
                                &scratch);
          CumulativeSum(cdf.data(), outcomes);
          const double total = cdf[outcomes - 1];
          if (!(total > 0 && std::isfinite(total))) {
            totals[row] = total;
            bad_row.Offer(row);
            break;
          }
          const std::vector<uint64_t>& masks = local_masks[g];
          const size_t nt = masks.size();
          // Few outcomes: a histogram of the shots, then each term's parity
          // per outcome; else each term's parity per shot.
          const bool histogram = outcomes <= static_cast<uint64_t>(shots);
          const size_t width = histogram ? outcomes : nt;
          counts.assign(chunks * width, 0);
          // A pointer, not the thread_local: chunks may run on other threads.
          int64_t* chunk_counts = counts.data();
          // Stream g + 1: Sample uses stream 0.
          DrawShots(generator, row, static_cast<uint32_t>(g + 1), shots, cdf.data(), outcomes,
                    chunks, parallel, &guide, [&](int chunk, uint64_t, uint64_t m) {
                      int64_t* count = chunk_counts + chunk * width;
                      if (histogram) {
                        ++count[m];
                        return;
                      }
                      for (size_t t = 0; t < nt; ++t) count[t] += __builtin_parityll(m & masks[t]);
                    });
          for (int chunk = 1; chunk < chunks; ++chunk)
            for (size_t i = 0; i < width; ++i) counts[i] += counts[chunk * width + i];
          for (size_t t = 0; t < nt; ++t) {
            int64_t n_odd = 0;
            if (histogram) {
              for (uint64_t m = 0; m < outcomes; ++m)
                if (__builtin_parityll(m & masks[t])) n_odd += counts[m];
            } else {
              n_odd = counts[t];
            }
            const auto* term = terms[groups[g].terms[t]];
            sums[term->observable] +=
                static_cast<double>(term->coeff) * (1.0 - 2.0 * static_cast<double>(n_odd) / shots);
          }
        }
        for (int i = 0; i < num_obs; ++i) o[row * num_obs + i] = static_cast<T>(sums[i]);
      }
    };
    this->ForEachSample(c, program, batch, run);
    if (!c->status().ok()) return;
    if (const int64_t row = bad_row.Get(); row >= 0)
      return FailBadDistribution<T>(c, row, totals[row]);
    CheckResultFinite<T>(c, *out, "expectations",
                         [num_obs](int64_t i) { return Index2(i, num_obs); });
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
