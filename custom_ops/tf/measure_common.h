// Shared by the measurement kernels (measure_kernels.cc) and the density
// kernels (density_kernels.cc): checks of the measurement inputs, drawing
// shots, and the estimation of Pauli terms from shots in qubit-wise
// commuting groups.
#ifndef QKERAS_HYBRID_TF_MEASURE_COMMON_H_
#define QKERAS_HYBRID_TF_MEASURE_COMMON_H_

#include <string>
#include <vector>

#include "../simulator/measure.h"
#include "common.h"

namespace qkh {

// The measured qubits (input `index`): 1..n distinct register indices;
// `register_name` is what n is called in messages.
inline bool ValidateQubits(OpKernelContext* c, int index, int num_qubits, std::vector<int>* out,
                           const char* register_name = "num_qubits") {
  const Tensor& t = c->input(index);
  auto fail = [c](const std::string& msg) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(msg));
    return false;
  };
  if (t.dims() != 1 || t.NumElements() < 1 || t.NumElements() > num_qubits)
    return fail("qubits must be a vector of 1 to " + std::string(register_name) + " = " +
                std::to_string(num_qubits) + " distinct register indices, got shape " +
                t.shape().DebugString());
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
inline bool ValidateShots(OpKernelContext* c, int index, int32_t* shots) {
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
inline bool ValidateSeed(OpKernelContext* c, int index, Philox4x32* generator) {
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

// The base of the read-out kernels: Compute decodes and checks the program
// (inputs 0..5) and the angles (input 6), then hands them to ComputeReadout.
template <typename T>
class ReadoutOpBase : public ExpectationOpBase<T> {
 public:
  using ExpectationOpBase<T>::ExpectationOpBase;

  void Compute(OpKernelContext* c) final {
    const std::shared_ptr<const Program<T>> program = this->Prepare(c);
    if (program != nullptr) ComputeReadout(c, *program, c->input(6));
  }

 protected:
  virtual void ComputeReadout(OpKernelContext* c, const Program<T>& program,
                              const Tensor& angles) = 0;
};

// Output 0 of a read-out op: `name` of shape `dims` (AllocateOutput), or
// for a gradient op d_angles, shaped like the angles. Null when there is
// nothing to compute: it failed, or it is empty.
template <typename T>
inline Tensor* AllocateReadout(OpKernelContext* c, bool gradient, const Tensor& angles,
                               const char* name, std::initializer_list<int64_t> dims) {
  Tensor* out = nullptr;
  if (!gradient) {
    out = AllocateOutput<T>(c, 0, name, dims);
  } else if (const auto status = c->allocate_output(0, angles.shape(), &out); !status.ok()) {
    c->CtxFailureWithWarning(__FILE__, __LINE__, status);
    return nullptr;
  }
  return out != nullptr && out->NumElements() > 0 ? out : nullptr;
}

// Runs sweep(grad) on a zeroed float64 gradient [lanes, num_angles] and
// stores it to d_angles, the rows of those lanes.
template <typename T, typename Sweep>
inline void StoreGradient(int lanes, int64_t num_angles, T* d_angles, Sweep sweep) {
  thread_local std::vector<double> grad;
  grad.assign(lanes * num_angles, 0.0);
  sweep(grad.data());
  for (int64_t i = 0; i < lanes * num_angles; ++i) d_angles[i] = static_cast<T>(grad[i]);
}

// CheckResultFinite of a [rows, cols] output, naming a value name[i, j].
template <typename T>
inline bool CheckMatrixFinite(OpKernelContext* c, const Tensor& t, const char* name,
                              int64_t cols) {
  return CheckResultFinite<T>(c, t, name, [cols](int64_t i) { return Index2(i, cols); });
}

// The rows of a batch that cannot be sampled: their probabilities sum to
// zero or overflow. The first one is reported, with its total.
class UnsampledRows {
 public:
  explicit UnsampledRows(int64_t batch) : totals_(batch) {}

  // Whether `total`, the sum of row's probabilities, can be sampled from;
  // the row is kept when not.
  bool Sampleable(int64_t row, double total) {
    if (total > 0 && std::isfinite(total)) return true;
    totals_[row] = total;
    first_.Offer(row);
    return false;
  }
  // The first row that cannot be sampled, or -1.
  int64_t First() const { return first_.Get(); }
  double Total(int64_t row) const { return totals_[row]; }

 private:
  FirstIndex first_;
  std::vector<double> totals_;
};

// A [batch, cols] input `name` (an upstream gradient), finite.
template <typename T>
inline bool ValidateMatrix(OpKernelContext* c, int index, const char* name, int64_t rows,
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

// Draws shots [0, shots) of one row from the cumulative distribution cdf
// and calls record(chunk, shot, outcome); chunks split the shots. Shot s
// takes half s % 2 of the generator's block s / 2, whichever chunk draws it.
// More than kGuideOutcomes outcomes are searched through a guide table
// (BuildGuide), built in `guide`.
constexpr uint64_t kGuideOutcomes = 64;
template <typename Record>
inline void DrawShots(const Philox4x32& generator, int64_t row, uint32_t stream, int32_t shots,
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

// Draws `shots` outcomes of k qubits for `row` from cdf (DrawShots) into
// samples [shots, k]: bit j of a sample is qubits[j], the MSB-first outcome
// index read backwards.
inline void DrawSamples(const Philox4x32& generator, int64_t row, int32_t shots, int k,
                        const double* cdf, int chunks, const ParallelChunks& parallel,
                        std::vector<uint64_t>* guide, int32_t* samples) {
  DrawShots(generator, row, 0, shots, cdf, uint64_t{1} << k, chunks, parallel, guide,
            [&](int, uint64_t shot, uint64_t m) {
              for (int j = 0; j < k; ++j) samples[shot * k + j] = m >> (k - 1 - j) & 1;
            });
}

// Fails when a row's probabilities sum to zero or overflow (possible only
// with non-unitary constant gates): nothing can be sampled from them.
template <typename T>
inline void FailBadDistribution(OpKernelContext* c, int64_t row, double total) {
  c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
      "the final state of batch row ", row, " has total probability ", Num(total),
      ": cannot sample from it (a non-unitary gate in gate_data?)"));
}

// The measurement settings of a sampled expectation: the program's Pauli
// terms grouped greedily into qubit-wise commuting groups, each group one
// setting whose shots its terms share. Identity terms are exact.
template <typename T>
struct MeasurementSettings {
  std::vector<const typename Program<T>::Term*> terms;
  std::vector<uint64_t> xs, zs;
  std::vector<double> exact;  // per observable: the identity terms
  std::vector<PauliGroup> groups;
  // Per group: the gather of its measured qubits (ascending, bit j = j-th
  // qubit), those qubits, and each term's support among them.
  std::vector<BitGather> gathers;
  std::vector<std::vector<int>> qubits;
  std::vector<std::vector<uint64_t>> local_masks;

  // num_qubits: the qubits the terms act on (a density program's physical ones).
  MeasurementSettings(const Program<T>& program, int num_qubits)
      : exact(program.num_observables, 0.0) {
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
    groups = GroupQubitWise(xs, zs);
    local_masks.resize(groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
      std::vector<int> qs, positions;
      const uint64_t support = groups[g].x_mask | groups[g].z_mask;
      for (int q = 0; q < num_qubits; ++q)
        if (support >> q & 1) {
          positions.push_back(static_cast<int>(qs.size()));
          qs.push_back(q);
        }
      gathers.emplace_back(num_qubits, qs, positions);
      for (int t : groups[g].terms) local_masks[g].push_back(gathers[g](xs[t] | zs[t]));
      qubits.push_back(qs);
    }
  }

  // Draws `shots` outcomes of group g for batch row `row` from the
  // cumulative distribution cdf of its 2^len(qubits[g]) outcomes and adds
  // coeff * (mean of (-1)^parity) of each of its terms to sums[observable].
  void EstimateGroup(size_t g, const Philox4x32& generator, int64_t row, int32_t shots,
                     const double* cdf, int chunks, const ParallelChunks& parallel,
                     std::vector<uint64_t>* guide, std::vector<int64_t>* counts,
                     double* sums) const {
    const uint64_t outcomes = uint64_t{1} << qubits[g].size();
    const std::vector<uint64_t>& masks = local_masks[g];
    const size_t nt = masks.size();
    // Few outcomes: a histogram of the shots, then each term's parity per
    // outcome; else each term's parity per shot.
    const bool histogram = outcomes <= static_cast<uint64_t>(shots);
    const size_t width = histogram ? outcomes : nt;
    counts->assign(chunks * width, 0);
    // A pointer, not the caller's thread_local: chunks may run on other threads.
    int64_t* chunk_counts = counts->data();
    // Stream g + 1: Sample uses stream 0.
    DrawShots(generator, row, static_cast<uint32_t>(g + 1), shots, cdf, outcomes, chunks,
              parallel, guide, [&](int chunk, uint64_t, uint64_t m) {
                int64_t* count = chunk_counts + chunk * width;
                if (histogram) {
                  ++count[m];
                  return;
                }
                for (size_t t = 0; t < nt; ++t) count[t] += __builtin_parityll(m & masks[t]);
              });
    for (int chunk = 1; chunk < chunks; ++chunk)
      for (size_t i = 0; i < width; ++i) (*counts)[i] += (*counts)[chunk * width + i];
    for (size_t t = 0; t < nt; ++t) {
      int64_t n_odd = 0;
      if (histogram) {
        for (uint64_t m = 0; m < outcomes; ++m)
          if (__builtin_parityll(m & masks[t])) n_odd += (*counts)[m];
      } else {
        n_odd = (*counts)[t];
      }
      const auto* term = terms[groups[g].terms[t]];
      sums[term->observable] +=
          static_cast<double>(term->coeff) * (1.0 - 2.0 * static_cast<double>(n_odd) / shots);
    }
  }
};

}  // namespace qkh

#endif  // QKERAS_HYBRID_TF_MEASURE_COMMON_H_
