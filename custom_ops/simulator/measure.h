// Measurements of a final state, framework-free: marginal probabilities,
// a counter-based random generator (Philox4x32-10), inverse-CDF sampling,
// qubit-wise commuting grouping of Pauli terms and the basis rotations
// that measure a group in the computational basis.
//
// States use the simulator's layout: 2^n real parts, then 2^n imaginary
// parts; bit q of an amplitude's index is qubit q.
#ifndef QKERAS_HYBRID_SIMULATOR_MEASURE_H_
#define QKERAS_HYBRID_SIMULATOR_MEASURE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "simulator.h"

namespace qkh {

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011): a bijection of a 128-bit counter under a 64-bit key. A
// random number is a function of (key, counter) only, so results do not
// depend on which thread draws them or in which order.
struct Philox4x32 {
  uint32_t key[2];

  // The key of a 128-bit seed: the generator keyed by seed[0] applied to
  // seed[1], so both halves matter.
  static Philox4x32 FromSeed(uint64_t seed0, uint64_t seed1) {
    Philox4x32 g{{static_cast<uint32_t>(seed0), static_cast<uint32_t>(seed0 >> 32)}};
    uint32_t ctr[4] = {static_cast<uint32_t>(seed1), static_cast<uint32_t>(seed1 >> 32),
                       0xffffffffu, 0xffffffffu};
    g.Block(ctr);
    return Philox4x32{{ctr[0], ctr[1]}};
  }

  // ctr <- Philox4x32-10(key, ctr).
  void Block(uint32_t ctr[4]) const {
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
      const uint64_t p0 = uint64_t{0xD2511F53u} * ctr[0];
      const uint64_t p1 = uint64_t{0xCD9E8D57u} * ctr[2];
      const uint32_t next[4] = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ k0,
                                static_cast<uint32_t>(p1),
                                static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ k1,
                                static_cast<uint32_t>(p0)};
      std::copy(next, next + 4, ctr);
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
  }

  // Uniform doubles in [0, 1) (53 random bits each) of shots 2p and 2p + 1
  // of a batch row, from counter (p, stream, row): `stream` separates the
  // measurement settings of one row.
  void UniformPair(uint64_t row, uint32_t stream, uint32_t pair, double out[2]) const {
    uint32_t ctr[4] = {pair, stream, static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32)};
    Block(ctr);
    out[0] = static_cast<double>(((uint64_t{ctr[0]} << 32) | ctr[1]) >> 11) * 0x1.0p-53;
    out[1] = static_cast<double>(((uint64_t{ctr[2]} << 32) | ctr[3]) >> 11) * 0x1.0p-53;
  }

  // UniformPair of pairs [first, first + count), count <= kBatchPairs, to
  // out[0, 2 * count): the rounds run across the pairs, which vectorizes.
  static constexpr int kBatchPairs = 32;
  void UniformPairs(uint64_t row, uint32_t stream, uint32_t first, int count, double* out) const {
    uint32_t c0[kBatchPairs], c1[kBatchPairs], c2[kBatchPairs], c3[kBatchPairs];
    for (int j = 0; j < kBatchPairs; ++j) {
      c0[j] = first + static_cast<uint32_t>(j);
      c1[j] = stream;
      c2[j] = static_cast<uint32_t>(row);
      c3[j] = static_cast<uint32_t>(row >> 32);
    }
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
      for (int j = 0; j < kBatchPairs; ++j) {
        const uint64_t p0 = uint64_t{0xD2511F53u} * c0[j];
        const uint64_t p1 = uint64_t{0xCD9E8D57u} * c2[j];
        const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[j] ^ k0;
        const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[j] ^ k1;
        c1[j] = static_cast<uint32_t>(p1);
        c3[j] = static_cast<uint32_t>(p0);
        c0[j] = n0;
        c2[j] = n2;
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (int j = 0; j < count; ++j) {
      out[2 * j] = static_cast<double>(((uint64_t{c0[j]} << 32) | c1[j]) >> 11) * 0x1.0p-53;
      out[2 * j + 1] = static_cast<double>(((uint64_t{c2[j]} << 32) | c3[j]) >> 11) * 0x1.0p-53;
    }
  }
};

// Gathers bits of an amplitude index: bit qubits[j] of x goes to bit
// positions[j] of the result. Tables per byte of x keep it at one lookup per
// 8 qubits.
class BitGather {
 public:
  BitGather(int num_qubits, const std::vector<int>& qubits, const std::vector<int>& positions)
      : bytes_((num_qubits + 7) / 8), table_(bytes_ * 256, 0) {
    for (size_t j = 0; j < qubits.size(); ++j) {
      const int q = qubits[j];
      uint64_t* t = table_.data() + (q / 8) * 256;
      for (int v = 0; v < 256; ++v)
        if (v >> (q % 8) & 1) t[v] |= uint64_t{1} << positions[j];
    }
  }
  // Cirq's order: the first listed qubit is the most significant bit.
  static BitGather MostSignificantFirst(int num_qubits, const std::vector<int>& qubits) {
    std::vector<int> positions(qubits.size());
    for (size_t j = 0; j < qubits.size(); ++j)
      positions[j] = static_cast<int>(qubits.size() - 1 - j);
    return BitGather(num_qubits, qubits, positions);
  }
  uint64_t operator()(uint64_t x) const {
    uint64_t m = 0;
    for (int c = 0; c < bytes_; ++c) m |= table_[c * 256 + (x >> (8 * c) & 255)];
    return m;
  }

 private:
  int bytes_;
  std::vector<uint64_t> table_;
};

// out[gather(x)] = sum of |psi[x]|^2 (in double) over a state of `size`
// amplitudes; out has 2^k entries. Chunks (run by `parallel`) sum parts of
// the state into their own copies of out, added at the end.
template <typename FP>
void MarginalProbabilities(const FP* psi, uint64_t size, const BitGather& gather,
                           double* out, uint64_t out_size, int num_chunks,
                           const ParallelChunks& parallel, std::vector<double>* scratch) {
  const FP* re = psi;
  const FP* im = psi + size;
  if (num_chunks <= 1) {
    std::fill(out, out + out_size, 0.0);
    for (uint64_t x = 0; x < size; ++x)
      out[gather(x)] += static_cast<double>(re[x]) * re[x] + static_cast<double>(im[x]) * im[x];
    return;
  }
  scratch->assign(num_chunks * out_size, 0.0);
  parallel(num_chunks, [&](int chunk) {
    uint64_t x0, x1;
    ChunkRange(size, num_chunks, chunk, &x0, &x1);
    double* part = scratch->data() + chunk * out_size;
    for (uint64_t x = x0; x < x1; ++x)
      part[gather(x)] += static_cast<double>(re[x]) * re[x] + static_cast<double>(im[x]) * im[x];
  });
  std::fill(out, out + out_size, 0.0);
  for (int chunk = 0; chunk < num_chunks; ++chunk)
    for (uint64_t m = 0; m < out_size; ++m) out[m] += (*scratch)[chunk * out_size + m];
}

// Turns probabilities p[0..size) into their running sums, in place.
inline void CumulativeSum(double* p, uint64_t size) {
  for (uint64_t m = 1; m < size; ++m) p[m] += p[m - 1];
}

// The outcome m of uniform u in [0, 1) by the inverse of the cumulative
// distribution cdf[0..size) (not necessarily normalized: u is scaled by its
// total): the first m with cdf[m] > u * total, so an outcome of zero
// probability is never drawn.
// The outcome is random, so a branching search mispredicts about half its
// steps: up to 64 outcomes, the entries <= target are counted (a vectorized
// compare), beyond, a binary search moves by conditional moves.
inline uint64_t SampleIndex(const double* cdf, uint64_t size, double u) {
  const double target = u * cdf[size - 1];
  if (size <= 64) {
    uint64_t m = 0;
    for (uint64_t i = 0; i < size; ++i) m += cdf[i] <= target;
    return std::min(m, size - 1);
  }
  const double* base = cdf;
  for (uint64_t n = size; n > 1;) {
    const uint64_t half = n / 2;
    base = base[half - 1] <= target ? base + half : base;
    n -= half;
  }
  const uint64_t m = static_cast<uint64_t>(base - cdf) + (*base <= target);
  return std::min(m, size - 1);
}

// SampleIndex by a guide table (Chen and Asau, 1974) for many outcomes:
// guide[j] (j < size) is where the search for u in [j / size, (j + 1) /
// size) starts, so it takes O(1) steps on average instead of log2(size)
// dependent loads. The steps both ways make the result exactly
// SampleIndex's whatever the rounding of the table.
inline void BuildGuide(const double* cdf, uint64_t size, uint64_t* guide) {
  const double total = cdf[size - 1];
  uint64_t m = 0;
  for (uint64_t j = 0; j < size; ++j) {
    const double threshold = total * (static_cast<double>(j) / static_cast<double>(size));
    while (m < size - 1 && cdf[m] <= threshold) ++m;
    guide[j] = m;
  }
}

inline uint64_t SampleIndexGuided(const double* cdf, const uint64_t* guide, uint64_t size,
                                  double u) {
  const double target = u * cdf[size - 1];
  uint64_t m = guide[std::min(static_cast<uint64_t>(u * static_cast<double>(size)), size - 1)];
  while (m > 0 && cdf[m - 1] > target) --m;
  while (m < size - 1 && cdf[m] <= target) ++m;
  return m;
}

// Pauli terms measured together: their Paulis agree on every qubit they
// share (qubit-wise commuting), so one measurement setting, the group's
// basis on each qubit (x_mask, z_mask: X, Z, or both for Y), serves all.
struct PauliGroup {
  uint64_t x_mask = 0, z_mask = 0;
  std::vector<int> terms;  // indices into the list grouped
};

// Greedy grouping, in the given order: each term joins the first group it
// commutes with qubit-wise, else starts a new one. Terms are (x_mask,
// z_mask) pairs; identity terms must not be passed (they need no shots).
inline std::vector<PauliGroup> GroupQubitWise(const std::vector<uint64_t>& x_masks,
                                              const std::vector<uint64_t>& z_masks) {
  std::vector<PauliGroup> groups;
  for (size_t t = 0; t < x_masks.size(); ++t) {
    const uint64_t x = x_masks[t], z = z_masks[t];
    PauliGroup* home = nullptr;
    for (PauliGroup& g : groups) {
      const uint64_t shared = (x | z) & (g.x_mask | g.z_mask);
      if (((x ^ g.x_mask) & shared) == 0 && ((z ^ g.z_mask) & shared) == 0) {
        home = &g;
        break;
      }
    }
    if (home == nullptr) {
      groups.emplace_back();
      home = &groups.back();
    }
    home->x_mask |= x;
    home->z_mask |= z;
    home->terms.push_back(static_cast<int>(t));
  }
  return groups;
}

// Rotates psi (2^n amplitudes, real then imaginary parts) so that measuring
// Z on qubit q measures X (H) where only x_mask has q, Y (S^dagger, then H)
// where both masks have it, and Z elsewhere.
template <typename FP>
void RotateToBasis(FP* psi, int num_qubits, uint64_t x_mask, uint64_t z_mask,
                   int num_chunks, const ParallelChunks& parallel) {
  const uint64_t size = uint64_t{1} << num_qubits;
  FP* re = psi;
  FP* im = psi + size;
  const FP h = static_cast<FP>(1 / std::sqrt(2.0));
  for (int q = 0; q < num_qubits; ++q) {
    if (!(x_mask >> q & 1)) continue;
    const bool y = z_mask >> q & 1;
    const uint64_t bit = uint64_t{1} << q, low = bit - 1;
    parallel(num_chunks, [&](int chunk) {
      uint64_t i0, i1;
      ChunkRange(size / 2, num_chunks, chunk, &i0, &i1);
      for (uint64_t i = i0; i < i1; ++i) {
        const uint64_t a = ((i & ~low) << 1) | (i & low), b = a | bit;
        FP br = re[b], bi = im[b];
        if (y) {  // S^dagger: |1> -> -i |1>
          const FP t = br;
          br = bi;
          bi = -t;
        }
        const FP ar = re[a], ai = im[a];
        re[a] = h * (ar + br);
        im[a] = h * (ai + bi);
        re[b] = h * (ar - br);
        im[b] = h * (ai - bi);
      }
    });
  }
}

}  // namespace qkh

#endif  // QKERAS_HYBRID_SIMULATOR_MEASURE_H_
