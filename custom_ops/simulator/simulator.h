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
    return 2.0 * std::ldexp(static_cast<double>(sizeof(C)), num_qubits);
  }

  // expectations[o] for one sample's angles.
  void Expectations(const FP* angles, FP* expectations, int num_chunks,
                    const ParallelChunks& parallel) {
    Forward(angles, num_chunks, parallel);
    Measure(phi_.data(), expectations, num_chunks, parallel);
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

  void Forward(const FP* angles, int num_chunks,
               const ParallelChunks& parallel) {
    if (phi_.size() != size_) phi_.resize(size_);
    std::fill(phi_.begin(), phi_.end(), C{0, 0});
    phi_[0] = C{1, 0};
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
    if (blk.kind == kDiagonal) {
      switch (blk.k) {
        case 1: return ForwardDiagonal<1>(blk, m, g0, g1);
        case 2: return ForwardDiagonal<2>(blk, m, g0, g1);
        default: return ForwardDiagonal<3>(blk, m, g0, g1);
      }
    }
    switch (blk.k) {
      case 1: return ForwardDense<1>(blk, m, g0, g1);
      case 2: return ForwardDense<2>(blk, m, g0, g1);
      default: return ForwardDense<3>(blk, m, g0, g1);
    }
  }

  template <int K>
  void ForwardDense(const Block& blk, const C* m, uint64_t g0, uint64_t g1) {
    constexpr int D = 1 << K;
    C* s = phi_.data();
    for (uint64_t g = g0; g < g1; ++g) {
      const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
      C v[D];
      for (int l = 0; l < D; ++l) v[l] = s[base + blk.offsets[l]];
      for (int r = 0; r < D; ++r) {
        FP re = 0, im = 0;
        for (int c = 0; c < D; ++c) {
          const C a = m[r * D + c];
          re += a.re * v[c].re - a.im * v[c].im;
          im += a.re * v[c].im + a.im * v[c].re;
        }
        s[base + blk.offsets[r]] = C{re, im};
      }
    }
  }

  template <int K>
  void ForwardDiagonal(const Block& blk, const C* m, uint64_t g0, uint64_t g1) {
    constexpr int D = 1 << K;
    C* s = phi_.data();
    C d[D];
    for (int l = 0; l < D; ++l) d[l] = m[l * D + l];
    for (uint64_t g = g0; g < g1; ++g) {
      const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
      for (int l = 0; l < D; ++l) {
        C& a = s[base + blk.offsets[l]];
        a = Mul(d[l], a);
      }
    }
  }

  // <phi| P |phi> = i^y sum_x conj(phi[x ^ xm]) (-1)^{|x & zm|} phi[x].
  void Measure(const C* s, FP* expectations, int num_chunks,
               const ParallelChunks& parallel) {
    const int num_obs = p_.num_observables;
    const size_t nd = p_.diagonal_terms.size();
    const size_t no = p_.offdiagonal_terms.size();
    std::vector<double>& partial = measure_partial_;
    partial.assign(num_chunks * (nd + no), 0.0);
    auto run = [&](int chunk) {
      uint64_t x0, x1;
      ChunkRange(size_, num_chunks, chunk, &x0, &x1);
      double* acc = partial.data() + chunk * (nd + no);
      if (nd > 0) {
        for (uint64_t x = x0; x < x1; ++x) {
          const FP prob = s[x].re * s[x].re + s[x].im * s[x].im;
          for (size_t t = 0; t < nd; ++t) {
            const bool odd =
                __builtin_popcountll(x & p_.diagonal_terms[t].z_mask) & 1;
            acc[t] += odd ? -prob : prob;
          }
        }
      }
      for (size_t t = 0; t < no; ++t) {
        const auto& term = p_.offdiagonal_terms[t];
        FP re = 0, im = 0;
        for (uint64_t x = x0; x < x1; ++x) {
          const C v = MulConj(s[x ^ term.x_mask], s[x]);
          const bool odd = __builtin_popcountll(x & term.z_mask) & 1;
          re += odd ? -v.re : v.re;
          im += odd ? -v.im : v.im;
        }
        // times i^y_phase, real part
        const double value = term.y_phase == 0 ? re
                             : term.y_phase == 1 ? -im
                             : term.y_phase == 2 ? -re
                                                 : im;
        acc[nd + t] += value;
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
    if (lambda_.size() != size_) lambda_.resize(size_);
    const C* s = phi_.data();
    C* l = lambda_.data();
    std::vector<FP>& diag_w = diagonal_weights_;
    diag_w.resize(p_.diagonal_terms.size());
    for (size_t t = 0; t < diag_w.size(); ++t)
      diag_w[t] = upstream[p_.diagonal_terms[t].observable] *
                  p_.diagonal_terms[t].coeff;
    // Diagonal terms write lambda in place (each x is its own output).
    auto diagonal = [&](int chunk) {
      uint64_t x0, x1;
      ChunkRange(size_, num_chunks, chunk, &x0, &x1);
      for (uint64_t x = x0; x < x1; ++x) {
        FP w = 0;
        for (size_t t = 0; t < diag_w.size(); ++t)
          w += (__builtin_popcountll(x & p_.diagonal_terms[t].z_mask) & 1)
                   ? -diag_w[t] : diag_w[t];
        l[x] = C{w * s[x].re, w * s[x].im};
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
          const C v = Mul(f, s[x]);
          const bool odd = __builtin_popcountll(x & term.z_mask) & 1;
          l[y].re += odd ? -v.re : v.re;
          l[y].im += odd ? -v.im : v.im;
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
      if (blk.kind == kDiagonal) {
        switch (blk.k) {
          case 1: return BackwardDiagonal<1>(blk, m, g0, g1, r);
          case 2: return BackwardDiagonal<2>(blk, m, g0, g1, r);
          default: return BackwardDiagonal<3>(blk, m, g0, g1, r);
        }
      }
      switch (blk.k) {
        case 1: return BackwardDense<1>(blk, m, g0, g1, r);
        case 2: return BackwardDense<2>(blk, m, g0, g1, r);
        default: return BackwardDense<3>(blk, m, g0, g1, r);
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

  // phi <- M^dagger phi, lambda <- M^dagger lambda, R += phi_before lambda_after^H.
  template <int K>
  void BackwardDense(const Block& blk, const C* m, uint64_t g0, uint64_t g1,
                     C* r) {
    constexpr int D = 1 << K;
    C* s = phi_.data();
    C* l = lambda_.data();
    for (uint64_t g = g0; g < g1; ++g) {
      const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
      C a[D], b[D], pa[D], pb[D];
      for (int i = 0; i < D; ++i) {
        a[i] = s[base + blk.offsets[i]];
        b[i] = l[base + blk.offsets[i]];
      }
      for (int i = 0; i < D; ++i) {
        FP ar = 0, ai = 0, br = 0, bi = 0;
        for (int j = 0; j < D; ++j) {
          const C u = m[j * D + i];  // (M^dagger)_{ij} = conj(M_{ji})
          ar += u.re * a[j].re + u.im * a[j].im;
          ai += u.re * a[j].im - u.im * a[j].re;
          br += u.re * b[j].re + u.im * b[j].im;
          bi += u.re * b[j].im - u.im * b[j].re;
        }
        pa[i] = C{ar, ai};
        pb[i] = C{br, bi};
        s[base + blk.offsets[i]] = pa[i];
        l[base + blk.offsets[i]] = pb[i];
      }
      if (r != nullptr) {
        for (int i = 0; i < D; ++i)
          for (int j = 0; j < D; ++j) {
            const C v = MulConj(b[j], pa[i]);  // phi_before[i] conj(lambda_after[j])
            r[i * D + j].re += v.re;
            r[i * D + j].im += v.im;
          }
      }
    }
  }

  template <int K>
  void BackwardDiagonal(const Block& blk, const C* m, uint64_t g0, uint64_t g1,
                        C* r) {
    constexpr int D = 1 << K;
    C* s = phi_.data();
    C* l = lambda_.data();
    C d[D];
    for (int i = 0; i < D; ++i) d[i] = m[i * D + i];
    for (uint64_t g = g0; g < g1; ++g) {
      const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
      for (int i = 0; i < D; ++i) {
        C& a = s[base + blk.offsets[i]];
        C& b = l[base + blk.offsets[i]];
        const C b_after = b;
        a = MulConj(d[i], a);
        b = MulConj(d[i], b);
        if (r != nullptr) {
          const C v = MulConj(b_after, a);
          r[i].re += v.re;
          r[i].im += v.im;
        }
      }
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
  std::vector<C> phi_, lambda_;
  // Scratch reused across samples and blocks: no allocation in the sweeps.
  std::vector<double> measure_partial_, measure_out_;
  std::vector<FP> diagonal_weights_;
  std::vector<C> r_partial_;
  C scratch_[64];
};

}  // namespace qkh

#endif  // QKERAS_HYBRID_SIMULATOR_SIMULATOR_H_
