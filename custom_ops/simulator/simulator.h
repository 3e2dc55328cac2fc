// Batched state-vector simulation of one compiled program: expectation values
// and their adjoint-method gradient. Framework-free and header-only; the TF
// adapter (custom_ops/tf) supplies the threads.
//
// Per sample the work is: build every block's matrix from the sample's angles
// (small dense products), sweep the blocks forward over the state, measure.
// The gradient sweeps back once: a single pass per block un-applies the block
// to both the state and the co-state and accumulates the block-local
// 2^k x 2^k matrix R = sum_rest phi_before (x) conj(lambda_after); every
// angle's derivative then follows from R with small matrix algebra only.
#ifndef QKERAS_HYBRID_SIMULATOR_SIMULATOR_H_
#define QKERAS_HYBRID_SIMULATOR_SIMULATOR_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "program.h"

namespace qkh {

// Runs fn(chunk) for chunk in [0, num_chunks), possibly in parallel.
using ParallelChunks = std::function<void(int num_chunks,
                                          const std::function<void(int)>& fn)>;

inline void RunSerially(int num_chunks, const std::function<void(int)>& fn) {
  for (int c = 0; c < num_chunks; ++c) fn(c);
}

// Index of the g-th group base: g with zero bits inserted at the block qubits.
inline uint64_t GroupBase(uint64_t g, const int* sorted_qubits, int k) {
  for (int j = 0; j < k; ++j) {
    const uint64_t low = (uint64_t{1} << sorted_qubits[j]) - 1;
    g = ((g & ~low) << 1) | (g & low);
  }
  return g;
}

inline void ChunkRange(uint64_t total, int num_chunks, int chunk,
                       uint64_t* begin, uint64_t* end) {
  *begin = total * chunk / num_chunks;
  *end = total * (chunk + 1) / num_chunks;
}

template <typename FP>
class Simulator {
 public:
  using C = Complex<FP>;

  explicit Simulator(const Program<FP>& program)
      : p_(program),
        size_(uint64_t{1} << program.num_qubits),
        matrix_offset_(program.blocks.size()),
        gate_matrix_offset_(program.gates.size()) {
    int64_t off = 0;
    for (size_t b = 0; b < p_.blocks.size(); ++b) {
      matrix_offset_[b] = off;
      off += p_.blocks[b].dim * p_.blocks[b].dim;
    }
    block_matrices_.resize(off);
    off = 0;
    for (size_t g = 0; g < p_.gates.size(); ++g) {
      gate_matrix_offset_[g] = off;
      const int dim = p_.blocks[p_.gates[g].block].dim;
      off += dim * dim;
    }
    gate_matrices_.resize(off);
  }

  uint64_t state_size() const { return size_; }

  // Bytes of the buffers a Simulator allocates (two state vectors at most).
  static double BytesPerInstance(int num_qubits) {
    return 4.0 * std::ldexp(static_cast<double>(sizeof(FP)), num_qubits);
  }

  // expectations[o] for one sample's angles.
  void Expectations(const FP* angles, FP* expectations, int num_chunks,
                    const ParallelChunks& parallel) {
    Forward(angles, num_chunks, parallel);
    Measure(expectations, num_chunks, parallel);
  }

  // d(sum_o upstream[o] * <O_o>)/d(angle) accumulated into d_angles (double).
  void Gradient(const FP* angles, const FP* upstream, double* d_angles,
                int num_chunks, const ParallelChunks& parallel) {
    Forward(angles, num_chunks, parallel);
    ApplyObservables(upstream, num_chunks, parallel);
    for (int b = static_cast<int>(p_.blocks.size()) - 1; b >= 0; --b)
      BackwardBlock(b, d_angles, num_chunks, parallel);
  }

 private:
  const C* GateMatrix(int g) const {
    const Gate& gate = p_.gates[g];
    if (gate.type == kConstant)
      return reinterpret_cast<const C*>(p_.data.data() + gate.data_offset);
    return gate_matrices_.data() + gate_matrix_offset_[g];
  }

  // U = sum_t exp(-i angle eig_t) P_t for every exponential gate, and each
  // block's product of its gates (the last gate leftmost).
  void BuildMatrices(const FP* angles) {
    for (size_t g = 0; g < p_.gates.size(); ++g) {
      const Gate& gate = p_.gates[g];
      if (gate.type != kExponential) continue;
      const int dim = p_.blocks[gate.block].dim;
      const int n = dim * dim;
      C* u = gate_matrices_.data() + gate_matrix_offset_[g];
      std::fill(u, u + n, C{0, 0});
      const FP* d = p_.data.data() + gate.data_offset;
      const FP angle = angles[gate.angle_slot];
      for (int t = 0; t < gate.num_terms; ++t, d += 1 + 2 * n) {
        const FP phase = -angle * d[0];
        const C e{std::cos(phase), std::sin(phase)};
        const C* proj = reinterpret_cast<const C*>(d + 1);
        for (int i = 0; i < n; ++i) {
          const C v = Mul(e, proj[i]);
          u[i].re += v.re;
          u[i].im += v.im;
        }
      }
    }
    for (size_t b = 0; b < p_.blocks.size(); ++b) {
      const Block& blk = p_.blocks[b];
      const int dim = blk.dim;
      C* m = block_matrices_.data() + matrix_offset_[b];
      const C* first = GateMatrix(blk.first_gate);
      std::copy(first, first + dim * dim, m);
      for (int g = blk.first_gate + 1; g < blk.first_gate + blk.num_gates; ++g) {
        if (blk.kind == kDiagonal) {
          const C* u = GateMatrix(g);
          for (int i = 0; i < dim; ++i)
            m[i * dim + i] = Mul(u[i * dim + i], m[i * dim + i]);
        } else {
          MatMul(GateMatrix(g), m, dim, scratch_);
          std::copy(scratch_, scratch_ + dim * dim, m);
        }
      }
    }
  }

  static void MatMul(const C* a, const C* b, int dim, C* out) {
    for (int i = 0; i < dim; ++i)
      for (int j = 0; j < dim; ++j) {
        C s{0, 0};
        for (int k = 0; k < dim; ++k) {
          const C v = Mul(a[i * dim + k], b[k * dim + j]);
          s.re += v.re;
          s.im += v.im;
        }
        out[i * dim + j] = s;
      }
  }

  // Calls fn(base, len) for runs of groups whose amplitudes are contiguous:
  // the group bits below the lowest block qubit map to consecutive indices,
  // which lets the compiler vectorize the inner loops of the kernels.
  template <typename Fn>
  static void ForRuns(const Block& blk, int k, uint64_t g0, uint64_t g1, Fn fn) {
    const uint64_t inner = uint64_t{1} << blk.sorted_qubits[0];
    for (uint64_t g = g0; g < g1;) {
      const uint64_t len = std::min(inner - (g & (inner - 1)), g1 - g);
      fn(GroupBase(g, blk.sorted_qubits, k), len);
      g += len;
    }
  }

  void Forward(const FP* angles, int num_chunks,
               const ParallelChunks& parallel) {
    if (sr_.size() != size_) {
      sr_.resize(size_);
      si_.resize(size_);
    }
    std::fill(sr_.begin(), sr_.end(), FP{0});
    std::fill(si_.begin(), si_.end(), FP{0});
    sr_[0] = 1;
    BuildMatrices(angles);
    for (size_t b = 0; b < p_.blocks.size(); ++b) {
      const Block& blk = p_.blocks[b];
      const C* m = block_matrices_.data() + matrix_offset_[b];
      const uint64_t groups = size_ >> blk.k;
      auto run = [&](int chunk) {
        uint64_t g0, g1;
        ChunkRange(groups, num_chunks, chunk, &g0, &g1);
        ApplyForward(blk, m, g0, g1);
      };
      if (num_chunks == 1) run(0); else parallel(num_chunks, run);
    }
  }

  void ApplyForward(const Block& blk, const C* m, uint64_t g0, uint64_t g1) {
    switch (blk.kind * 4 + blk.k) {
      case kDiagonal * 4 + 1: return ForwardDiagonal<1>(blk, m, g0, g1);
      case kDiagonal * 4 + 2: return ForwardDiagonal<2>(blk, m, g0, g1);
      case kDiagonal * 4 + 3: return ForwardDiagonal<3>(blk, m, g0, g1);
      case kRealDense * 4 + 1: return ForwardDense<1, true>(blk, m, g0, g1);
      case kRealDense * 4 + 2: return ForwardDense<2, true>(blk, m, g0, g1);
      case kRealDense * 4 + 3: return ForwardDense<3, true>(blk, m, g0, g1);
      case kDense * 4 + 1: return ForwardDense<1, false>(blk, m, g0, g1);
      case kDense * 4 + 2: return ForwardDense<2, false>(blk, m, g0, g1);
      default: return ForwardDense<3, false>(blk, m, g0, g1);
    }
  }

  // out = M v on every group; kReal: M has no imaginary part.
  template <int K, bool kReal>
  void ForwardDense(const Block& blk, const C* m, uint64_t g0, uint64_t g1) {
    constexpr int D = 1 << K;
    FP mr[D * D], mi[D * D];
    for (int i = 0; i < D * D; ++i) {
      mr[i] = m[i].re;
      mi[i] = kReal ? FP{0} : m[i].im;
    }
    FP* re = sr_.data();
    FP* im = si_.data();
    // Captured by value: the compiler then knows stores to the state cannot
    // alias the matrix and keeps it in registers.
    ForRuns(blk, K, g0, g1, [=, &blk](uint64_t base, uint64_t len) {
      FP* pr[D];
      FP* pi[D];
      for (int l = 0; l < D; ++l) {
        pr[l] = re + base + blk.offsets[l];
        pi[l] = im + base + blk.offsets[l];
      }
#pragma GCC ivdep
      for (uint64_t t = 0; t < len; ++t) {
        FP vr[D], vi[D];
        for (int l = 0; l < D; ++l) {
          vr[l] = pr[l][t];
          vi[l] = pi[l][t];
        }
        for (int r = 0; r < D; ++r) {
          FP ar = 0, ai = 0;
          for (int c = 0; c < D; ++c) {
            ar += mr[r * D + c] * vr[c];
            ai += mr[r * D + c] * vi[c];
            if constexpr (!kReal) {
              ar -= mi[r * D + c] * vi[c];
              ai += mi[r * D + c] * vr[c];
            }
          }
          pr[r][t] = ar;
          pi[r][t] = ai;
        }
      }
    });
  }

  template <int K>
  void ForwardDiagonal(const Block& blk, const C* m, uint64_t g0, uint64_t g1) {
    constexpr int D = 1 << K;
    FP* re = sr_.data();
    FP* im = si_.data();
    for (int l = 0; l < D; ++l) {
      const FP dr = m[l * D + l].re, di = m[l * D + l].im;
      ForRuns(blk, K, g0, g1, [&](uint64_t base, uint64_t len) {
        FP* pr = re + base + blk.offsets[l];
        FP* pi = im + base + blk.offsets[l];
#pragma GCC ivdep
        for (uint64_t t = 0; t < len; ++t) {
          const FP a = pr[t], b = pi[t];
          pr[t] = dr * a - di * b;
          pi[t] = dr * b + di * a;
        }
      });
    }
  }

  static inline bool Odd(uint64_t x, uint64_t mask) {
    return __builtin_popcountll(x & mask) & 1;
  }

  // <phi| P |phi> = i^y sum_x conj(phi[x ^ xm]) (-1)^{|x & zm|} phi[x].
  void Measure(FP* expectations, int num_chunks,
               const ParallelChunks& parallel) {
    const int num_obs = p_.num_observables;
    const size_t nd = p_.diagonal_terms.size();
    const size_t no = p_.offdiagonal_terms.size();
    const FP* re = sr_.data();
    const FP* im = si_.data();
    std::vector<double>& partial = measure_partial_;
    partial.assign(num_chunks * (nd + no), 0.0);
    auto run = [&](int chunk) {
      uint64_t x0, x1;
      ChunkRange(size_, num_chunks, chunk, &x0, &x1);
      double* acc = partial.data() + chunk * (nd + no);
      for (size_t t = 0; t < nd; ++t) {
        const uint64_t zm = p_.diagonal_terms[t].z_mask;
        FP sum = 0;
        for (uint64_t x = x0; x < x1; ++x) {
          const FP prob = re[x] * re[x] + im[x] * im[x];
          sum += Odd(x, zm) ? -prob : prob;
        }
        acc[t] = sum;
      }
      for (size_t t = 0; t < no; ++t) {
        const auto& term = p_.offdiagonal_terms[t];
        FP sum_re = 0, sum_im = 0;
        for (uint64_t x = x0; x < x1; ++x) {
          const uint64_t y = x ^ term.x_mask;
          const FP vr = re[y] * re[x] + im[y] * im[x];
          const FP vi = re[y] * im[x] - im[y] * re[x];
          const bool odd = Odd(x, term.z_mask);
          sum_re += odd ? -vr : vr;
          sum_im += odd ? -vi : vi;
        }
        // times i^y_phase, real part
        acc[nd + t] = term.y_phase == 0 ? sum_re
                      : term.y_phase == 1 ? -sum_im
                      : term.y_phase == 2 ? -sum_re
                                          : sum_im;
      }
    };
    if (num_chunks == 1) run(0); else parallel(num_chunks, run);
    std::vector<double>& out = measure_out_;
    out.assign(num_obs, 0.0);
    for (int c = 0; c < num_chunks; ++c) {
      const double* acc = partial.data() + c * (nd + no);
      for (size_t t = 0; t < nd; ++t)
        out[p_.diagonal_terms[t].observable] += p_.diagonal_terms[t].coeff * acc[t];
      for (size_t t = 0; t < no; ++t)
        out[p_.offdiagonal_terms[t].observable] +=
            p_.offdiagonal_terms[t].coeff * acc[nd + t];
    }
    for (int o = 0; o < num_obs; ++o) expectations[o] = static_cast<FP>(out[o]);
  }

  // lambda = (sum_o upstream[o] O_o) phi.
  void ApplyObservables(const FP* upstream, int num_chunks,
                        const ParallelChunks& parallel) {
    if (lr_.size() != size_) {
      lr_.resize(size_);
      li_.resize(size_);
    }
    const FP* re = sr_.data();
    const FP* im = si_.data();
    FP* lre = lr_.data();
    FP* lim = li_.data();
    std::vector<FP>& diag_w = diagonal_weights_;
    diag_w.resize(p_.diagonal_terms.size());
    for (size_t t = 0; t < diag_w.size(); ++t)
      diag_w[t] = upstream[p_.diagonal_terms[t].observable] *
                  p_.diagonal_terms[t].coeff;
    // Diagonal terms: each x is its own output.
    auto diagonal = [&](int chunk) {
      uint64_t x0, x1;
      ChunkRange(size_, num_chunks, chunk, &x0, &x1);
      for (uint64_t x = x0; x < x1; ++x) {
        FP w = 0;
        for (size_t t = 0; t < diag_w.size(); ++t)
          w += Odd(x, p_.diagonal_terms[t].z_mask) ? -diag_w[t] : diag_w[t];
        lre[x] = w * re[x];
        lim[x] = w * im[x];
      }
    };
    if (num_chunks == 1) diagonal(0); else parallel(num_chunks, diagonal);
    // Off-diagonal term: lambda[x ^ xm] += w i^y (-1)^{|x & zm|} phi[x];
    // iterating over the output index y = x ^ xm keeps chunks disjoint.
    for (const auto& term : p_.offdiagonal_terms) {
      const FP w = upstream[term.observable] * term.coeff;
      C f{0, 0};
      if (term.y_phase == 0) f = {w, 0};
      if (term.y_phase == 1) f = {0, w};
      if (term.y_phase == 2) f = {-w, 0};
      if (term.y_phase == 3) f = {0, -w};
      auto offdiagonal = [&](int chunk) {
        uint64_t y0, y1;
        ChunkRange(size_, num_chunks, chunk, &y0, &y1);
        for (uint64_t y = y0; y < y1; ++y) {
          const uint64_t x = y ^ term.x_mask;
          const FP vr = f.re * re[x] - f.im * im[x];
          const FP vi = f.re * im[x] + f.im * re[x];
          const bool odd = Odd(x, term.z_mask);
          lre[y] += odd ? -vr : vr;
          lim[y] += odd ? -vi : vi;
        }
      };
      if (num_chunks == 1) offdiagonal(0); else parallel(num_chunks, offdiagonal);
    }
  }

  void BackwardBlock(int b, double* d_angles, int num_chunks,
                     const ParallelChunks& parallel) {
    const Block& blk = p_.blocks[b];
    const int dim = blk.dim;
    const C* m = block_matrices_.data() + matrix_offset_[b];
    const uint64_t groups = size_ >> blk.k;
    const int rsize = blk.kind == kDiagonal ? dim : dim * dim;
    std::vector<C>& partial = r_partial_;
    partial.assign(blk.has_angles ? num_chunks * rsize : 0, C{0, 0});
    auto run = [&](int chunk) {
      uint64_t g0, g1;
      ChunkRange(groups, num_chunks, chunk, &g0, &g1);
      C* r = blk.has_angles ? partial.data() + chunk * rsize : nullptr;
      const bool real = blk.kind == kRealDense;
      switch ((blk.kind == kDiagonal ? 0 : real ? 4 : 8) + blk.k) {
        case 1: return BackwardDiagonal<1>(blk, m, g0, g1, r);
        case 2: return BackwardDiagonal<2>(blk, m, g0, g1, r);
        case 3: return BackwardDiagonal<3>(blk, m, g0, g1, r);
        case 5: return BackwardDense<1, true>(blk, m, g0, g1, r);
        case 6: return BackwardDense<2, true>(blk, m, g0, g1, r);
        case 7: return BackwardDense<3, true>(blk, m, g0, g1, r);
        case 9: return BackwardDense<1, false>(blk, m, g0, g1, r);
        case 10: return BackwardDense<2, false>(blk, m, g0, g1, r);
        default: return BackwardDense<3, false>(blk, m, g0, g1, r);
      }
    };
    if (num_chunks == 1) run(0); else parallel(num_chunks, run);
    if (!blk.has_angles) return;
    C* r = partial.data();
    for (int c = 1; c < num_chunks; ++c)
      for (int i = 0; i < rsize; ++i) {
        r[i].re += partial[c * rsize + i].re;
        r[i].im += partial[c * rsize + i].im;
      }
    if (blk.kind == kDiagonal)
      DiagonalAngleGradients(blk, m, r, d_angles);
    else
      DenseAngleGradients(blk, m, r, d_angles);
  }

  // phi <- M^dagger phi, lambda <- M^dagger lambda and, if r is given,
  // R[i][j] += phi_before[i] conj(lambda_after[j]) in one pass.
  template <int K, bool kReal>
  void BackwardDense(const Block& blk, const C* m, uint64_t g0, uint64_t g1,
                     C* r) {
    if (r != nullptr)
      BackwardDenseRuns<K, kReal, true>(blk, m, g0, g1, r);
    else
      BackwardDenseRuns<K, kReal, false>(blk, m, g0, g1, r);
  }

  template <int K, bool kReal, bool kWithR>
  void BackwardDenseRuns(const Block& blk, const C* m, uint64_t g0, uint64_t g1,
                         C* r) {
    constexpr int D = 1 << K;
    FP hr[D * D], hi[D * D];  // M^dagger
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j) {
        hr[i * D + j] = m[j * D + i].re;
        hi[i * D + j] = kReal ? FP{0} : -m[j * D + i].im;
      }
    FP rr_total[D * D] = {}, ri_total[D * D] = {};
    FP* state[4] = {sr_.data(), si_.data(), lr_.data(), li_.data()};
    ForRuns(blk, K, g0, g1, [=, &blk, &rr_total, &ri_total](uint64_t base, uint64_t len) {
      // Run-local accumulators: they stay in registers and vectorize.
      FP rr[D * D] = {}, ri[D * D] = {};
      FP *sr[D], *si[D], *lr[D], *li[D];
      for (int l = 0; l < D; ++l) {
        sr[l] = state[0] + base + blk.offsets[l];
        si[l] = state[1] + base + blk.offsets[l];
        lr[l] = state[2] + base + blk.offsets[l];
        li[l] = state[3] + base + blk.offsets[l];
      }
#pragma GCC ivdep
      for (uint64_t t = 0; t < len; ++t) {
        FP ar[D], ai[D], br[D], bi[D];
        for (int l = 0; l < D; ++l) {
          ar[l] = sr[l][t];
          ai[l] = si[l][t];
          br[l] = lr[l][t];
          bi[l] = li[l][t];
        }
        FP pr[D], pi[D];
        for (int i = 0; i < D; ++i) {
          FP xr = 0, xi = 0, yr = 0, yi = 0;
          for (int j = 0; j < D; ++j) {
            const FP ur = hr[i * D + j];
            xr += ur * ar[j];
            xi += ur * ai[j];
            yr += ur * br[j];
            yi += ur * bi[j];
            if constexpr (!kReal) {
              const FP ui = hi[i * D + j];
              xr -= ui * ai[j];
              xi += ui * ar[j];
              yr -= ui * bi[j];
              yi += ui * br[j];
            }
          }
          pr[i] = xr;
          pi[i] = xi;
          sr[i][t] = xr;
          si[i][t] = xi;
          lr[i][t] = yr;
          li[i][t] = yi;
        }
        if constexpr (kWithR) {
          for (int i = 0; i < D; ++i)
            for (int j = 0; j < D; ++j) {  // phi_before[i] conj(lambda_after[j])
              rr[i * D + j] += pr[i] * br[j] + pi[i] * bi[j];
              ri[i * D + j] += pi[i] * br[j] - pr[i] * bi[j];
            }
        }
      }
      for (int i = 0; i < D * D; ++i) {
        rr_total[i] += rr[i];
        ri_total[i] += ri[i];
      }
    });
    if constexpr (kWithR)
      for (int i = 0; i < D * D; ++i) r[i] = C{rr_total[i], ri_total[i]};
  }

  template <int K>
  void BackwardDiagonal(const Block& blk, const C* m, uint64_t g0, uint64_t g1,
                        C* r) {
    constexpr int D = 1 << K;
    for (int l = 0; l < D; ++l) {
      const FP dr = m[l * D + l].re, di = -m[l * D + l].im;  // conj
      FP rr = 0, ri = 0;
      ForRuns(blk, K, g0, g1, [&](uint64_t base, uint64_t len) {
        FP* sr = sr_.data() + base + blk.offsets[l];
        FP* si = si_.data() + base + blk.offsets[l];
        FP* lr = lr_.data() + base + blk.offsets[l];
        FP* li = li_.data() + base + blk.offsets[l];
#pragma GCC ivdep
        for (uint64_t t = 0; t < len; ++t) {
          const FP a = sr[t], b = si[t], c = lr[t], d = li[t];
          const FP pa = dr * a - di * b, pb = dr * b + di * a;
          sr[t] = pa;
          si[t] = pb;
          lr[t] = dr * c - di * d;
          li[t] = dr * d + di * c;
          rr += pa * c + pb * d;  // phi_before conj(lambda_after)
          ri += pb * c - pa * d;
        }
      });
      if (r != nullptr) r[l] = C{rr, ri};
    }
  }

  // d/d angle_j = 2 Im Tr(H_j Q_j), Q_last = M R, Q_{j-1} = U_j^dagger Q_j U_j.
  void DenseAngleGradients(const Block& blk, const C* m, const C* r,
                           double* d_angles) {
    const int dim = blk.dim;
    C q[64], t[64];
    MatMul(m, r, dim, q);
    for (int g = blk.first_gate + blk.num_gates - 1; g >= blk.first_gate; --g) {
      const Gate& gate = p_.gates[g];
      if (gate.type == kExponential) {
        const C* h = p_.hamiltonians.data() + p_.hamiltonian_offset[g];
        double im = 0;
        for (int i = 0; i < dim; ++i)
          for (int j = 0; j < dim; ++j) {
            const C a = h[i * dim + j], b = q[j * dim + i];
            im += static_cast<double>(a.re) * b.im + static_cast<double>(a.im) * b.re;
          }
        d_angles[gate.angle_slot] += 2.0 * im;
      }
      if (g == blk.first_gate) break;
      const C* u = GateMatrix(g);
      MatMul(q, u, dim, t);  // Q U
      for (int i = 0; i < dim; ++i)  // U^dagger (Q U)
        for (int j = 0; j < dim; ++j) {
          C s{0, 0};
          for (int k = 0; k < dim; ++k) {
            const C v = MulConj(u[k * dim + i], t[k * dim + j]);
            s.re += v.re;
            s.im += v.im;
          }
          q[i * dim + j] = s;
        }
    }
  }

  // Diagonal blocks commute: d/d angle_j = 2 Im sum_a H_j,aa M_aa R_aa.
  void DiagonalAngleGradients(const Block& blk, const C* m, const C* r,
                              double* d_angles) {
    const int dim = blk.dim;
    for (int g = blk.first_gate; g < blk.first_gate + blk.num_gates; ++g) {
      const Gate& gate = p_.gates[g];
      if (gate.type != kExponential) continue;
      const C* h = p_.hamiltonians.data() + p_.hamiltonian_offset[g];
      double im = 0;
      for (int a = 0; a < dim; ++a) {
        const C v = Mul(Mul(h[a * dim + a], m[a * dim + a]), r[a]);
        im += v.im;
      }
      d_angles[gate.angle_slot] += 2.0 * im;
    }
  }

  const Program<FP>& p_;
  const uint64_t size_;
  std::vector<int64_t> matrix_offset_;
  std::vector<int64_t> gate_matrix_offset_;
  std::vector<C> block_matrices_;
  std::vector<C> gate_matrices_;
  // State and co-state, real and imaginary parts apart (vectorizes).
  std::vector<FP> sr_, si_, lr_, li_;
  // Scratch reused across samples and blocks: no allocation in the sweeps.
  std::vector<double> measure_partial_, measure_out_;
  std::vector<FP> diagonal_weights_;
  std::vector<C> r_partial_;
  C scratch_[64];
};

}  // namespace qkh

#endif  // QKERAS_HYBRID_SIMULATOR_SIMULATOR_H_
