// Batched state-vector simulation of one compiled program: expectation values
// and their adjoint-method gradient. Framework-free and header-only; the TF
// adapter (custom_ops/tf) supplies the threads.
//
// A Simulator<FP, W> runs W samples at once in W interleaved lanes: amplitude
// x of lane s lives at x * W + s, real and imaginary parts in separate arrays.
// Small states use W = 8 or 16, so every kernel's innermost loop runs over the
// lanes and vectorizes however tiny the state (at 4 qubits the cost is
// per-gate dispatch, which the lanes share). Large states use W = 1 and the
// innermost loop runs over contiguous amplitudes instead.
//
// Per sample the work is: build every block's matrix from the sample's angles
// (small dense products), sweep the blocks forward over the state, measure.
// The gradient sweeps back once: a single pass per block (of 1 or 2 qubits;
// 3-qubit blocks take 2 + 2^3) un-applies the block to both the state and the
// co-state and accumulates the block-local 2^k x 2^k matrix
// R = sum_rest phi_before (x) conj(lambda_after); every angle's derivative
// then follows from R with small matrix algebra only.
//
// Non-unitary blocks (a trajectory's Kraus selection, a density program's
// superoperator; program.h) cannot be un-applied by their adjoint: the
// adjoint pass moves the co-state back by M^dagger and restores the state
// before the block from a given inverse or from a checkpoint that the
// forward sweep saved (Block::restore). Programs without them never touch
// that machinery. Density programs use the sweeps through ForwardSweep /
// BackwardSweep, with the read-outs of density.h.
#ifndef QKERAS_HYBRID_SIMULATOR_SIMULATOR_H_
#define QKERAS_HYBRID_SIMULATOR_SIMULATOR_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <type_traits>
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

// Groups from g on whose amplitudes follow each other in memory: the group
// bits below the lowest block qubit map to consecutive indices.
inline uint64_t RunLength(const Block& blk, uint64_t g, uint64_t g1) {
  const uint64_t inner = uint64_t{1} << blk.sorted_qubits[0];
  return std::min(inner - (g & (inner - 1)), g1 - g);
}

inline void ChunkRange(uint64_t total, int num_chunks, int chunk,
                       uint64_t* begin, uint64_t* end) {
  *begin = total * chunk / num_chunks;
  *end = total * (chunk + 1) / num_chunks;
}

// sin and cos of W values at once, in a loop the compiler vectorizes (the
// libm calls it replaces were half the cost of a small circuit). Cody-Waite
// reduction to [-pi/4, pi/4] and the minimax polynomials of Cephes' sin/cos:
// within 2 ulp of libm for |x| < 2^20; larger values take libm's path.
template <int W>
inline void SinCos(const double* x, double* sin_x, double* cos_x) {
  bool small = true;
  for (int s = 0; s < W; ++s) small &= std::fabs(x[s]) < 1048576.0;
  if (!small) {
    for (int s = 0; s < W; ++s) {
      sin_x[s] = std::sin(x[s]);
      cos_x[s] = std::cos(x[s]);
    }
    return;
  }
  constexpr double kTwoOverPi = 0.63661977236758134308;
  // pi/2 in three parts (Cephes' DP1..DP3, doubled).
  constexpr double kPio2A = 1.57079625129699707031;
  constexpr double kPio2B = 7.54978941586159635336e-8;
  constexpr double kPio2C = 5.39030285815811905290e-15;
  for (int s = 0; s < W; ++s) {
    const double k = std::floor(x[s] * kTwoOverPi + 0.5);
    // fma keeps the three steps apart under -fassociative-math.
    const double r = std::fma(-k, kPio2C, std::fma(-k, kPio2B, std::fma(-k, kPio2A, x[s])));
    const double z = r * r;
    const double sp =
        r + r * z * (((((1.58962301576546568060e-10 * z - 2.50507477628578072866e-8) * z +
                        2.75573136213857245213e-6) * z - 1.98412698295895385996e-4) * z +
                      8.33333333332211858878e-3) * z - 1.66666666666666307295e-1);
    const double cp =
        1.0 - 0.5 * z +
        z * z * (((((-1.13585365213876817300e-11 * z + 2.08757008419747316778e-9) * z -
                    2.75573141792967388112e-7) * z + 2.48015872888517045348e-5) * z -
                  1.38888888888730564116e-3) * z + 4.16666666666665929218e-2);
    const int q = static_cast<int>(k) & 3;
    const double sa = (q & 1) ? cp : sp;
    const double ca = (q & 1) ? sp : cp;
    sin_x[s] = (q & 2) ? -sa : sa;
    cos_x[s] = ((q + 1) & 2) ? -ca : ca;
  }
}

template <typename FP, int W>
class Simulator {
 public:
  using C = Complex<FP>;
  static constexpr int kLanes = W;

  explicit Simulator(const Program<FP>& program)
      : p_(program), size_(uint64_t{1} << program.num_qubits) {
    int64_t off = 0;
    for (const Block& blk : p_.blocks) {
      block_offset_.push_back(off);
      off += blk.dim * blk.dim * W;
    }
    block_re_.resize(off);
    block_im_.resize(off);
    off = 0;
    for (const Gate& gate : p_.gates) {
      gate_offset_.push_back(off);
      const int n = p_.blocks[gate.block].dim * p_.blocks[gate.block].dim;
      off += n * W;
    }
    gate_re_.resize(off);
    gate_im_.resize(off);
    for (size_t g = 0; g < p_.gates.size(); ++g) {  // constants: once
      const Gate& gate = p_.gates[g];
      if (gate.type != kConstant && gate.type != kSuperoperator) continue;
      const int n = p_.blocks[gate.block].dim * p_.blocks[gate.block].dim;
      const FP* d = p_.data.data() + gate.data_offset;
      for (int e = 0; e < n; ++e)
        for (int s = 0; s < W; ++s) {
          gate_re_[gate_offset_[g] + e * W + s] = d[2 * e];
          gate_im_[gate_offset_[g] + e * W + s] = d[2 * e + 1];
        }
    }
    values_.assign((1 + 2 * p_.phases.size()) * W, FP{1});  // value 0 stays 1
    // A block of one gate is that gate's matrix; a block of constant gates
    // is multiplied out here, once.
    for (size_t b = 0; b < p_.blocks.size(); ++b) {
      const Block& blk = p_.blocks[b];
      const bool single = blk.num_gates == 1;
      block_mr_.push_back(single ? gate_re_.data() + gate_offset_[blk.first_gate]
                                 : block_re_.data() + block_offset_[b]);
      block_mi_.push_back(single ? gate_im_.data() + gate_offset_[blk.first_gate]
                                 : block_im_.data() + block_offset_[b]);
      bool constant = true;
      for (int g = blk.first_gate; g < blk.first_gate + blk.num_gates; ++g)
        constant &= p_.gates[g].type == kConstant;
      if (!single && !constant) variable_blocks_.push_back(static_cast<int>(b));
      if (!single && constant) MultiplyBlock(b);
    }
    // The inverses of the superoperators the adjoint pass un-applies by them.
    bool inverses = false;
    for (const Block& blk : p_.blocks) inverses |= blk.restore == kRestoreInverse;
    for (size_t b = 0; inverses && b < p_.blocks.size(); ++b) {
      const Block& blk = p_.blocks[b];
      inverse_offset_.push_back(static_cast<int64_t>(inverse_re_.size()));
      if (blk.restore != kRestoreInverse) continue;
      const int n = blk.dim * blk.dim;
      const FP* d = p_.data.data() + p_.gates[blk.first_gate].data_offset + 2 * n;
      for (int e = 0; e < n; ++e)
        for (int s = 0; s < W; ++s) {
          inverse_re_.push_back(d[2 * e]);
          inverse_im_.push_back(d[2 * e + 1]);
        }
    }
  }

  // Bytes of the buffers a Simulator allocates: state and co-state, and the
  // matrices of every gate and block (a program may have millions).
  // With `checkpoints` (an adjoint pass), also the states saved at the
  // blocks restored from checkpoints.
  static double BytesPerInstance(const Program<FP>& program, bool checkpoints = false) {
    const double states = 4.0 + (checkpoints ? 2.0 * program.num_checkpoints : 0.0);
    return W * static_cast<double>(sizeof(FP)) *
           (states * std::ldexp(1.0, program.num_qubits) + 2.0 * program.matrix_entries);
  }

  // Expectations of `lanes` <= W samples: row s of angles (stride
  // angle_stride) gives row s of expectations (stride num_observables).
  // The circuit starts from |0...0> unless `initial` is given: lane s then
  // starts from initial + s * 2 * 2^n (2^n real parts, then 2^n imaginary
  // parts; bit q of an amplitude's index is qubit q).
  void Expectations(const FP* angles, int64_t angle_stride, int lanes,
                    FP* expectations, int num_chunks,
                    const ParallelChunks& parallel,
                    const FP* initial = nullptr) {
    Forward(angles, angle_stride, lanes, num_chunks, parallel, initial);
    Measure(expectations, lanes, num_chunks, parallel);
  }

  // d_angles[s][a] += d(sum_o upstream[s][o] <O_o>)/d angles[s][a]; with an
  // initial state, d_initial (same layout) receives the derivatives with
  // respect to its real and imaginary parts.
  void Gradient(const FP* angles, int64_t angle_stride, int lanes,
                const FP* upstream, double* d_angles, int num_chunks,
                const ParallelChunks& parallel, const FP* initial = nullptr,
                FP* d_initial = nullptr) {
    Forward(angles, angle_stride, lanes, num_chunks, parallel, initial, /*checkpoints=*/true);
    Backward(upstream, d_angles, angle_stride, lanes, num_chunks, parallel);
    if (d_initial == nullptr) return;
    // The co-state is now A psi with A = U^dagger O U, and
    // <psi|A|psi> has gradient 2 Re(A psi), 2 Im(A psi) in (Re psi, Im psi).
    for (int s = 0; s < lanes; ++s) {
      FP* out = d_initial + s * 2 * size_;
      for (uint64_t x = 0; x < size_; ++x) {
        out[x] = 2 * lr_[x * W + s];
        out[size_ + x] = real_state_ ? FP{0} : 2 * li_[x * W + s];
      }
    }
  }

  // Writes the state the last Forward (Expectations) left, lane s of
  // `lanes` to out + s * 2 * 2^n: 2^n real parts, then 2^n imaginary parts
  // (the layout of `initial`).
  void StoreState(int lanes, FP* out) const {
    // In blocks of amplitudes: the lanes' rows, 2 * 2^n apart (one cache
    // set), get whole cache lines, and the interleaved state is read once.
    for (uint64_t x0 = 0; x0 < size_; x0 += kCopyBlock) {
      const uint64_t x1 = std::min(size_, x0 + kCopyBlock);
      for (int s = 0; s < lanes; ++s) {
        FP* __restrict o = out + s * 2 * size_;
        const FP* __restrict re = sr_.data();
        const FP* __restrict im = si_.data();
        for (uint64_t x = x0; x < x1; ++x) o[x] = re[x * W + s];
        if (real_state_)
          std::fill(o + size_ + x0, o + size_ + x1, FP{0});
        else
          for (uint64_t x = x0; x < x1; ++x) o[size_ + x] = im[x * W + s];
      }
    }
  }

  // Gradient, given the final state that the forward sweep from |0...0>
  // ended in (lane s at final + s * 2 * 2^n, as StoreState writes it), so the
  // forward sweep is not run again. The gradient is exact only if `final` is
  // the state these angles produce.
  void GradientFromFinalState(const FP* final, const FP* angles,
                              int64_t angle_stride, int lanes,
                              const FP* upstream, double* d_angles,
                              int num_chunks, const ParallelChunks& parallel) {
    if (p_.num_checkpoints > 0)  // the checkpoints come from a forward sweep only
      return Gradient(angles, angle_stride, lanes, upstream, d_angles, num_chunks, parallel);
    EnsureState(&sr_, &si_);
    real_state_ = p_.real_state;
    ToLanes(final, lanes, FP{1}, &sr_, &si_);
    BuildMatrices(angles, angle_stride, lanes);
    Backward(upstream, d_angles, angle_stride, lanes, num_chunks, parallel);
  }

  // d_angles[s][a] += 2 Re <lambda_s| d psi_s / d angles[s][a]>, psi_s the
  // final state the angles produce from |0...0> (given in `final`, as
  // GradientFromFinalState takes it) and lambda_s = scale * costate_s (same
  // layout), a co-state given at the end of the circuit. With lambda = O psi
  // this is the gradient of <psi|O|psi>; with lambda = D psi, D diagonal, of
  // probabilities; with lambda = g / 2, g = dL/dRe psi + i dL/dIm psi, of a
  // real loss L of the state.
  void GradientFromCostate(const FP* final, const FP* costate, FP scale,
                           const FP* angles, int64_t angle_stride, int lanes,
                           double* d_angles, int num_chunks,
                           const ParallelChunks& parallel) {
    EnsureState(&sr_, &si_);
    EnsureState(&lr_, &li_);
    if (p_.num_checkpoints > 0) {  // the checkpoints come from a forward sweep only
      Forward(angles, angle_stride, lanes, num_chunks, parallel, nullptr, /*checkpoints=*/true);
    } else {
      real_state_ = p_.real_state;
      ToLanes(final, lanes, FP{1}, &sr_, &si_);
      BuildMatrices(angles, angle_stride, lanes);
    }
    // A real circuit's derivatives of a real state are real: only the
    // co-state's real part counts (ToLanes drops the rest), and the sweep
    // keeps it real.
    ToLanes(costate, lanes, scale, &lr_, &li_);
    BackwardSweep(d_angles, angle_stride, lanes, num_chunks, parallel);
  }

  // ---- The parts of a sweep, for density programs (density.h) ----

  // The forward sweep from |0...0> (for a density program, vec(|0><0|)); with
  // `checkpoints`, saves the states the adjoint pass restores from.
  void ForwardSweep(const FP* angles, int64_t angle_stride, int lanes, int num_chunks,
                    const ParallelChunks& parallel, bool checkpoints) {
    Forward(angles, angle_stride, lanes, num_chunks, parallel, nullptr, checkpoints);
  }
  // The state and the co-state, lanes interleaved (amplitude x of lane s at
  // x * W + s), real and imaginary parts apart. When real_state(), the
  // imaginary parts are zero and the sweeps neither read nor write them.
  FP* StateRe() { return sr_.data(); }
  FP* StateIm() { return si_.data(); }
  FP* CostateRe() { return lr_.data(); }
  FP* CostateIm() { return li_.data(); }
  bool real_state() const { return real_state_; }
  // Allocates the co-state (zeros), to be filled before BackwardSweep.
  void ZeroCostate(int num_chunks, const ParallelChunks& parallel) {
    EnsureState(&lr_, &li_);
    auto zero = [&](int chunk) {
      uint64_t x0, x1;
      ChunkRange(size_ * W, num_chunks, chunk, &x0, &x1);
      std::fill(lr_.begin() + x0, lr_.begin() + x1, FP{0});
      std::fill(li_.begin() + x0, li_.begin() + x1, FP{0});
    };
    if (num_chunks == 1) zero(0); else parallel(num_chunks, zero);
  }
  // The adjoint pass after ForwardSweep(..., checkpoints = true), from the
  // co-state lambda at the end: d_angles[s][a] += 2 Re <lambda_s| d v_s /
  // d angles[s][a]>, v_s the final vector.
  void BackwardSweep(double* d_angles, int64_t angle_stride, int lanes, int num_chunks,
                     const ParallelChunks& parallel) {
    for (int b = static_cast<int>(p_.blocks.size()) - 1; b >= 0; --b)
      BackwardBlock(b, d_angles, angle_stride, lanes, num_chunks, parallel);
  }

 private:
  template <int V>
  using Int = std::integral_constant<int, V>;

  // The vectors a kernel works on: the state and the co-state.
  struct Vectors {
    FP* sr;
    FP* si;
    FP* lr;
    FP* li;
  };
  Vectors Full() { return {sr_.data(), si_.data(), lr_.data(), li_.data()}; }

  static constexpr uint64_t kCopyBlock = 64;

  // (re, im) <- scale * the states at `in` (lane s at in + s * 2 * 2^n, as
  // StoreState writes them), interleaved into lanes, in blocks of
  // amplitudes as StoreState copies; padding lanes repeat lane 0, and the
  // imaginary parts are zero if the state stays real.
  void ToLanes(const FP* in, int lanes, FP scale, std::vector<FP>* re_out,
               std::vector<FP>* im_out) {
    FP* __restrict re = re_out->data();
    FP* __restrict im = im_out->data();
    for (uint64_t x0 = 0; x0 < size_; x0 += kCopyBlock) {
      const uint64_t x1 = std::min(size_, x0 + kCopyBlock);
      for (int s = 0; s < W; ++s) {
        const FP* __restrict row = in + (s < lanes ? s : 0) * 2 * size_;
        for (uint64_t x = x0; x < x1; ++x) re[x * W + s] = scale * row[x];
        for (uint64_t x = x0; x < x1; ++x)
          im[x * W + s] = real_state_ ? FP{0} : scale * row[size_ + x];
      }
    }
  }

  void Backward(const FP* upstream, double* d_angles, int64_t angle_stride,
                int lanes, int num_chunks, const ParallelChunks& parallel) {
    ApplyObservables(upstream, lanes, num_chunks, parallel);
    BackwardSweep(d_angles, angle_stride, lanes, num_chunks, parallel);
  }
  template <bool V>
  using Bool = std::integral_constant<bool, V>;

  static bool IsDiagonal(const Block& blk) {
    return blk.kind == kDiagonal || blk.kind == kRealDiagonal;
  }

  // U = sum_t exp(-i angle eig_t) P_t for every exponential gate and lane,
  // from the sines and cosines of the program's phases (see
  // Program::contributions), then the matrices of the blocks that use them.
  void BuildMatrices(const FP* angles, int64_t angle_stride, int lanes) {
    for (size_t i = 0; i < p_.phases.size(); ++i) {
      double phase[W], sin[W], cos[W];
      for (int s = 0; s < W; ++s)  // padding lanes repeat lane 0
        phase[s] = -static_cast<double>(
                       angles[(s < lanes ? s : 0) * angle_stride + p_.phases[i].slot]) *
                   p_.phases[i].eig;
      SinCos<W>(phase, sin, cos);
      FP* value = values_.data() + (1 + 2 * i) * W;
      for (int s = 0; s < W; ++s) {
        value[s] = static_cast<FP>(cos[s]);
        value[W + s] = static_cast<FP>(sin[s]);
      }
    }
    for (size_t g = 0; g < p_.gates.size(); ++g) {
      const Gate& gate = p_.gates[g];
      if (gate.type != kExponential) continue;
      const int n = p_.blocks[gate.block].dim * p_.blocks[gate.block].dim;
      FP* ur = gate_re_.data() + gate_offset_[g];
      FP* ui = gate_im_.data() + gate_offset_[g];
      std::fill(ur, ur + n * W, FP{0});
      std::fill(ui, ui + n * W, FP{0});
      const auto* end = p_.contributions.data() + p_.contributions_begin[g + 1];
      for (auto* c = p_.contributions.data() + p_.contributions_begin[g]; c != end; ++c) {
        const FP* v = values_.data() + c->value * W;
        AddScaled(c->re, v, ur + c->entry * W);
        if (c->im != 0) AddScaled(c->im, v, ui + c->entry * W);
      }
    }
    // Kraus selections: each lane's matrix is option k = its angle value
    // (validated by the op to be an integer in [0, count)).
    for (const auto& selection : p_.selections) {
      const Gate& gate = p_.gates[selection.gate];
      const int n = p_.blocks[gate.block].dim * p_.blocks[gate.block].dim;
      FP* ur = gate_re_.data() + gate_offset_[selection.gate];
      FP* ui = gate_im_.data() + gate_offset_[selection.gate];
      for (int s = 0; s < W; ++s) {  // padding lanes repeat lane 0
        const int64_t k = static_cast<int64_t>(
            angles[(s < lanes ? s : 0) * angle_stride + selection.slot]);
        const FP* d = p_.data.data() + gate.data_offset + k * 2 * n;
        for (int e = 0; e < n; ++e) {
          ur[e * W + s] = d[2 * e];
          ui[e * W + s] = d[2 * e + 1];
        }
      }
    }
    for (int b : variable_blocks_) MultiplyBlock(b);
  }

  // out += a v, lane by lane (restrict parameters: the loop vectorizes).
  static void AddScaled(FP a, const FP* __restrict v, FP* __restrict out) {
    for (int s = 0; s < W; ++s) out[s] += a * v[s];
  }

  // The block's matrix: the product of its gates (the last gate leftmost).
  void MultiplyBlock(size_t b) {
    const Block& blk = p_.blocks[b];
    const int dim = blk.dim;
    FP* mr = block_re_.data() + block_offset_[b];
    FP* mi = block_im_.data() + block_offset_[b];
    const int64_t first = gate_offset_[blk.first_gate];
    std::copy(gate_re_.begin() + first, gate_re_.begin() + first + dim * dim * W, mr);
    std::copy(gate_im_.begin() + first, gate_im_.begin() + first + dim * dim * W, mi);
    for (int g = blk.first_gate + 1; g < blk.first_gate + blk.num_gates; ++g) {
      const FP* ur = gate_re_.data() + gate_offset_[g];
      const FP* ui = gate_im_.data() + gate_offset_[g];
      if (IsDiagonal(blk)) {
        for (int i = 0; i < dim; ++i) {
          const int e = (i * dim + i) * W;
          for (int s = 0; s < W; ++s) {
            const FP a = mr[e + s], c = mi[e + s];
            mr[e + s] = ur[e + s] * a - ui[e + s] * c;
            mi[e + s] = ur[e + s] * c + ui[e + s] * a;
          }
        }
      } else {
        MatMul(ur, ui, mr, mi, dim, false, scratch_re_, scratch_im_);
        std::copy(scratch_re_, scratch_re_ + dim * dim * W, mr);
        std::copy(scratch_im_, scratch_im_ + dim * dim * W, mi);
      }
    }
  }

  // out = a b (or a^dagger b) per lane; dim x dim matrices of W lanes.
  static void MatMul(const FP* ar, const FP* ai, const FP* br, const FP* bi,
                     int dim, bool adjoint_a, FP* outr, FP* outi) {
    auto run = [&](auto d, auto adjoint) { MatMulOf<d, adjoint>(ar, ai, br, bi, outr, outi); };
    switch (dim * 2 + adjoint_a) {
      case 4: return run(Int<2>{}, Bool<false>{});
      case 5: return run(Int<2>{}, Bool<true>{});
      case 8: return run(Int<4>{}, Bool<false>{});
      case 9: return run(Int<4>{}, Bool<true>{});
      case 16: return run(Int<8>{}, Bool<false>{});
      default: return run(Int<8>{}, Bool<true>{});
    }
  }

  // MatMul with the size and the adjoint known at compile time, so that the
  // loops unroll and the lanes vectorize.
  template <int D, bool kAdjointA>
  static void MatMulOf(const FP* __restrict ar, const FP* __restrict ai,
                       const FP* __restrict br, const FP* __restrict bi,
                       FP* __restrict outr, FP* __restrict outi) {
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j) {
        FP sr[W] = {}, si[W] = {};
        for (int k = 0; k < D; ++k) {
          const int ea = (kAdjointA ? k * D + i : i * D + k) * W;
          const int eb = (k * D + j) * W;
          for (int s = 0; s < W; ++s) {
            const FP xr = ar[ea + s], xi = kAdjointA ? -ai[ea + s] : ai[ea + s];
            sr[s] += xr * br[eb + s] - xi * bi[eb + s];
            si[s] += xr * bi[eb + s] + xi * br[eb + s];
          }
        }
        for (int s = 0; s < W; ++s) {
          outr[(i * D + j) * W + s] = sr[s];
          outi[(i * D + j) * W + s] = si[s];
        }
      }
  }

  void EnsureState(std::vector<FP>* re, std::vector<FP>* im) {
    if (re->size() != size_ * W) {
      re->resize(size_ * W);
      im->resize(size_ * W);
    }
  }

  // Calls f(K, diagonal, real, imag) with the block's kernel parameters as
  // compile-time constants; imag is false when the whole state stays real.
  // K <= kMaxK: 3 for unitary blocks, 4 where superoperators may come.
  template <int kMaxK = kMaxBlockQubits, typename F>
  void Dispatch(const Block& blk, F&& f) const {
    auto with_k = [&](auto diagonal, auto real, auto imag) {
      switch (blk.k) {
        case 1: return f(Int<1>{}, diagonal, real, imag);
        case 2: return f(Int<2>{}, diagonal, real, imag);
        case 3: return f(Int<3>{}, diagonal, real, imag);
        default:
          if constexpr (kMaxK >= 4) return f(Int<4>{}, diagonal, real, imag);
          else return f(Int<3>{}, diagonal, real, imag);
      }
    };
    const bool real = blk.kind == kRealDense || blk.kind == kRealDiagonal;
    if (IsDiagonal(blk)) {
      if (real_state_) return with_k(Bool<true>{}, Bool<true>{}, Bool<false>{});
      return with_k(Bool<true>{}, Bool<false>{}, Bool<true>{});
    }
    if (!real) return with_k(Bool<false>{}, Bool<false>{}, Bool<true>{});
    if (real_state_) return with_k(Bool<false>{}, Bool<true>{}, Bool<false>{});
    return with_k(Bool<false>{}, Bool<true>{}, Bool<true>{});
  }

  void Forward(const FP* angles, int64_t angle_stride, int lanes,
               int num_chunks, const ParallelChunks& parallel,
               const FP* initial, bool checkpoints = false) {
    EnsureState(&sr_, &si_);
    real_state_ = p_.real_state;
    if (initial == nullptr) {
      std::fill(sr_.begin(), sr_.end(), FP{0});
      std::fill(si_.begin(), si_.end(), FP{0});
      for (int s = 0; s < W; ++s) sr_[s] = 1;
    } else {
      for (int s = 0; s < W; ++s) {  // padding lanes repeat lane 0
        const FP* in = initial + (s < lanes ? s : 0) * 2 * size_;
        for (uint64_t x = 0; x < size_; ++x) {
          sr_[x * W + s] = in[x];
          si_[x * W + s] = in[size_ + x];
          if (in[size_ + x] != 0) real_state_ = false;
        }
      }
    }
    BuildMatrices(angles, angle_stride, lanes);
    if (checkpoints && p_.num_checkpoints > 0)
      checkpoints_.resize(static_cast<size_t>(p_.num_checkpoints) * 2 * size_ * W);
    for (size_t b = 0; b < p_.blocks.size(); ++b) {
      const Block& blk = p_.blocks[b];
      if (checkpoints && blk.restore == kRestoreCheckpoint)
        CopyState(sr_.data(), si_.data(), Checkpoint(blk), Checkpoint(blk) + size_ * W,
                  num_chunks, parallel);
      if (blk.special && p_.gates[blk.first_gate].type == kJumpSelection)
        ChooseJump(static_cast<int>(b), angles, angle_stride, lanes, num_chunks, parallel);
      auto run = [&](int chunk) {
        uint64_t g0, g1;
        ChunkRange(size_ >> blk.k, num_chunks, chunk, &g0, &g1);
        ForwardKernel(blk, static_cast<int>(b), Full(), g0, g1);
      };
      if (num_chunks == 1) run(0); else parallel(num_chunks, run);
    }
  }

  // Applies block b to groups [g0, g1) of v's state.
  void ForwardKernel(const Block& blk, int b, const Vectors& v, uint64_t g0, uint64_t g1) {
    ApplyMatrix(blk, block_mr_[b], block_mi_[b], v.sr, v.si, g0, g1);
  }

  // (re, im) <- M (re, im) on groups [g0, g1), M a matrix of the block's
  // shape and kind (per lane).
  void ApplyMatrix(const Block& blk, const FP* mr, const FP* mi, FP* re, FP* im, uint64_t g0,
                   uint64_t g1) {
    Dispatch<kMaxSuperBlockQubits>(blk, [&](auto k, auto diagonal, auto real, auto imag) {
      if constexpr (diagonal)
        ForwardDiagonal<k, imag>(blk, mr, mi, re, im, g0, g1);
      else
        ApplyDense<k, real, imag>(blk, mr, mi, re, im, g0, g1);
    });
  }

  // The matrix of quantum-jump block b, per lane, from the state reaching
  // it: with rho = the block qubits' reduced (unnormalized) density matrix,
  // n_k = ||K_k psi||^2 = tr(K_k^dagger K_k rho) and T = sum n_k, operator k
  // is the first whose running sum of n_k exceeds u T (u the lane's angle),
  // applied as K_k sqrt(T / n_k): E[K psi psi^dagger K^dagger] = sum_k
  // K_k psi psi^dagger K_k^dagger, and ||psi|| is kept for a
  // trace-preserving channel.
  void ChooseJump(int b, const FP* angles, int64_t angle_stride, int lanes, int num_chunks,
                  const ParallelChunks& parallel) {
    const Block& blk = p_.blocks[b];
    const Gate& gate = p_.gates[blk.first_gate];
    const int d = blk.dim, dd = d * d;
    // Per chunk and lane: rho[i][j] = sum psi_i conj(psi_j), in double.
    std::vector<double>& partial = jump_partial_;
    partial.assign(static_cast<size_t>(num_chunks) * W * dd * 2, 0.0);
    auto accumulate = [&](int chunk) {
      uint64_t g0, g1;
      ChunkRange(size_ >> blk.k, num_chunks, chunk, &g0, &g1);
      double* rho = partial.data() + static_cast<size_t>(chunk) * W * dd * 2;
      for (uint64_t g = g0; g < g1; ++g) {
        const uint64_t base = GroupBase(g, blk.sorted_qubits, blk.k);
        for (int i = 0; i < d; ++i)
          for (int j = 0; j < d; ++j) {
            const FP* ar = sr_.data() + (base + blk.offsets[i]) * W;
            const FP* ai = si_.data() + (base + blk.offsets[i]) * W;
            const FP* br = sr_.data() + (base + blk.offsets[j]) * W;
            const FP* bi = si_.data() + (base + blk.offsets[j]) * W;
            double* out = rho + (i * d + j) * 2 * W;
            for (int s = 0; s < W; ++s) {
              out[s] += static_cast<double>(ar[s]) * br[s] + static_cast<double>(ai[s]) * bi[s];
              out[W + s] += static_cast<double>(ai[s]) * br[s] - static_cast<double>(ar[s]) * bi[s];
            }
          }
      }
    };
    if (num_chunks == 1) accumulate(0); else parallel(num_chunks, accumulate);
    for (int c = 1; c < num_chunks; ++c)
      for (size_t i = 0; i < static_cast<size_t>(W) * dd * 2; ++i)
        partial[i] += partial[static_cast<size_t>(c) * W * dd * 2 + i];
    FP* ur = gate_re_.data() + gate_offset_[blk.first_gate];
    FP* ui = gate_im_.data() + gate_offset_[blk.first_gate];
    std::vector<double> norms(gate.num_terms);
    for (int s = 0; s < W; ++s) {
      double total = 0;
      for (int k = 0; k < gate.num_terms; ++k) {
        const FP* kr = p_.data.data() + gate.data_offset + static_cast<int64_t>(k) * 2 * dd;
        // tr(K^dagger K rho) = sum_{r,i,j} conj(K[r][i]) K[r][j] rho[j][i]
        double n = 0;
        for (int r = 0; r < d; ++r)
          for (int i = 0; i < d; ++i)
            for (int j = 0; j < d; ++j) {
              const double ar = kr[2 * (r * d + i)], ai = -kr[2 * (r * d + i) + 1];
              const double br = kr[2 * (r * d + j)], bi = kr[2 * (r * d + j) + 1];
              const double pr = ar * br - ai * bi, pi = ar * bi + ai * br;
              const double* rho = partial.data() + (j * d + i) * 2 * W;
              n += pr * rho[s] - pi * rho[W + s];
            }
        norms[k] = std::max(0.0, n);
        total += norms[k];
      }
      const double u = static_cast<double>(angles[(s < lanes ? s : 0) * angle_stride +
                                                  p_.jumps[JumpIndex(blk.first_gate)].slot]);
      int chosen = 0;
      double scale = 0;
      if (total > 0) {
        double running = 0;
        chosen = -1;
        for (int k = 0; k < gate.num_terms && chosen < 0; ++k) {
          running += norms[k];
          if (norms[k] > 0 && running > u * total) chosen = k;
        }
        if (chosen < 0)  // u * total rounded up to the total: the last possible one
          for (int k = gate.num_terms - 1; k >= 0 && chosen < 0; --k)
            if (norms[k] > 0) chosen = k;
        scale = std::sqrt(total / norms[chosen]);
      }
      const FP* kr = p_.data.data() + gate.data_offset + static_cast<int64_t>(chosen) * 2 * dd;
      for (int e = 0; e < dd; ++e) {
        ur[e * W + s] = static_cast<FP>(scale * kr[2 * e]);
        ui[e * W + s] = static_cast<FP>(scale * kr[2 * e + 1]);
      }
    }
  }

  int JumpIndex(int gate) const {
    for (size_t i = 0; i < p_.jumps.size(); ++i)
      if (p_.jumps[i].gate == gate) return static_cast<int>(i);
    return 0;  // unreachable: every jump gate is listed
  }

  FP* Checkpoint(const Block& blk) {
    return checkpoints_.data() + static_cast<size_t>(blk.checkpoint) * 2 * size_ * W;
  }

  // Copies a state (re, im; size_ * W values each), in chunks.
  void CopyState(const FP* re, const FP* im, FP* out_re, FP* out_im, int num_chunks,
                 const ParallelChunks& parallel) {
    auto copy = [&](int chunk) {
      uint64_t x0, x1;
      ChunkRange(size_ * W, num_chunks, chunk, &x0, &x1);
      std::copy(re + x0, re + x1, out_re + x0);
      if (!real_state_) std::copy(im + x0, im + x1, out_im + x0);
    };
    if (num_chunks == 1) copy(0); else parallel(num_chunks, copy);
  }

  // The adjoint pass through a non-unitary block: lambda <- M^dagger lambda,
  // and the state before the block from its inverse or its checkpoint.
  void BackwardNonUnitary(int b, int num_chunks, const ParallelChunks& parallel) {
    const Block& blk = p_.blocks[b];
    const int dim = blk.dim;
    adjoint_re_.resize(dim * dim * W);
    adjoint_im_.resize(dim * dim * W);
    const FP* mr = block_mr_[b];
    const FP* mi = block_mi_[b];
    for (int i = 0; i < dim; ++i)
      for (int j = 0; j < dim; ++j)
        for (int s = 0; s < W; ++s) {
          adjoint_re_[(i * dim + j) * W + s] = mr[(j * dim + i) * W + s];
          adjoint_im_[(i * dim + j) * W + s] = -mi[(j * dim + i) * W + s];
        }
    auto run = [&](int chunk) {
      uint64_t g0, g1;
      ChunkRange(size_ >> blk.k, num_chunks, chunk, &g0, &g1);
      ApplyMatrix(blk, adjoint_re_.data(), adjoint_im_.data(), lr_.data(), li_.data(), g0, g1);
      if (blk.restore == kRestoreInverse)
        ApplyMatrix(blk, inverse_re_.data() + inverse_offset_[b],
                    inverse_im_.data() + inverse_offset_[b], sr_.data(), si_.data(), g0, g1);
    };
    if (num_chunks == 1) run(0); else parallel(num_chunks, run);
    if (blk.restore == kRestoreCheckpoint) {
      const FP* saved = Checkpoint(blk);
      CopyState(saved, saved + size_ * W, sr_.data(), si_.data(), num_chunks, parallel);
    }
  }

  // v <- M v on every group of (re, im); kReal: M has no imaginary part;
  // !kImag: the vector is real and stays real.
  template <int K, bool kReal, bool kImag>
  static void ApplyDense(const Block& blk, const FP* m_re, const FP* m_im,
                         FP* const re, FP* const im, uint64_t g0, uint64_t g1) {
    constexpr int D = 1 << K;
    // Local copies: the compiler knows state stores cannot alias them.
    FP mr[D * D * W], mi[D * D * W];
    std::copy(m_re, m_re + D * D * W, mr);
    if (!kReal) std::copy(m_im, m_im + D * D * W, mi);
    for (uint64_t g = g0; g < g1;) {
      const uint64_t len = RunLength(blk, g, g1);
      const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
      FP* pr[D];
      FP* pi[D];
      for (int l = 0; l < D; ++l) {
        pr[l] = re + (base + blk.offsets[l]) * W;
        pi[l] = im + (base + blk.offsets[l]) * W;
      }
#pragma GCC ivdep
      for (uint64_t t = 0; t < len; ++t) {
#pragma GCC ivdep
        for (int s = 0; s < W; ++s) {
          const uint64_t x = t * W + s;
          FP vr[D], vi[D] = {};
          for (int l = 0; l < D; ++l) {
            vr[l] = pr[l][x];
            if constexpr (kImag) vi[l] = pi[l][x];
          }
          for (int r = 0; r < D; ++r) {
            FP ar = 0, ai = 0;
            for (int c = 0; c < D; ++c) {
              const FP u = mr[(r * D + c) * W + s];
              ar += u * vr[c];
              if constexpr (kImag) ai += u * vi[c];
              if constexpr (!kReal) {
                const FP v = mi[(r * D + c) * W + s];
                ar -= v * vi[c];
                ai += v * vr[c];
              }
            }
            pr[r][x] = ar;
            if constexpr (kImag) pi[r][x] = ai;
          }
        }
      }
      g += len;
    }
  }

  template <int K, bool kImag>
  static void ForwardDiagonal(const Block& blk, const FP* m_re, const FP* m_im,
                              FP* const re, FP* const im, uint64_t g0, uint64_t g1) {
    constexpr int D = 1 << K;
    FP dr[D * W], di[D * W];
    for (int l = 0; l < D; ++l)
      for (int s = 0; s < W; ++s) {
        dr[l * W + s] = m_re[(l * D + l) * W + s];
        di[l * W + s] = m_im[(l * D + l) * W + s];
      }
    for (uint64_t g = g0; g < g1;) {
      const uint64_t len = RunLength(blk, g, g1);
      const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
      for (int l = 0; l < D; ++l) {
        FP* pr = re + (base + blk.offsets[l]) * W;
        FP* pi = im + (base + blk.offsets[l]) * W;
#pragma GCC ivdep
        for (uint64_t t = 0; t < len; ++t)
#pragma GCC ivdep
          for (int s = 0; s < W; ++s) {
            const uint64_t x = t * W + s;
            if constexpr (kImag) {
              const FP a = pr[x], b = pi[x];
              pr[x] = dr[l * W + s] * a - di[l * W + s] * b;
              pi[x] = dr[l * W + s] * b + di[l * W + s] * a;
            } else {  // a real state through a real diagonal
              pr[x] = dr[l * W + s] * pr[x];
            }
          }
      }
      g += len;
    }
  }

  static inline bool Odd(uint64_t x, uint64_t mask) {
    return __builtin_popcountll(x & mask) & 1;
  }

  // Diagonal Pauli terms whose Z mask lies in the low half of the qubits, or
  // in the high half, are measured from marginal probabilities and applied
  // from per-half tables: O(2^n + T 2^(n/2)) work instead of O(T 2^n).
  int LowBits() const { return p_.num_qubits / 2; }
  enum Half { kLow, kHigh, kMixed };
  Half HalfOf(uint64_t z_mask) const {
    const uint64_t low = (uint64_t{1} << LowBits()) - 1;
    if ((z_mask & ~low) == 0) return kLow;
    if ((z_mask & low) == 0) return kHigh;
    return kMixed;
  }

  // <phi| P |phi> = i^y sum_x conj(phi[x ^ xm]) (-1)^{|x & zm|} phi[x].
  void Measure(FP* expectations, int lanes, int num_chunks,
               const ParallelChunks& parallel) {
    const int h = LowBits();
    const uint64_t nl = uint64_t{1} << h, nh = size_ >> h;
    std::vector<const typename Program<FP>::Term*> mixed;
    for (const auto& term : p_.diagonal_terms)
      if (HalfOf(term.z_mask) == kMixed) mixed.push_back(&term);
    const size_t nm = mixed.size(), no = p_.offdiagonal_terms.size();
    const FP* re = sr_.data();
    const FP* im = si_.data();
    // Per chunk: low marginal [nl][W], sums of mixed and off-diagonal terms.
    const size_t stride = (nl + nm + no) * W;
    std::vector<double>& partial = measure_partial_;
    partial.assign(num_chunks * stride, 0.0);
    std::vector<double>& high = measure_high_;  // [nh][W], chunks write apart
    high.assign(nh * W, 0.0);
    auto run = [&](int chunk) {
      uint64_t h0, h1;  // chunks split the high half
      ChunkRange(nh, num_chunks, chunk, &h0, &h1);
      double* low = partial.data() + chunk * stride;
      double* acc = low + nl * W;
      for (uint64_t xh = h0; xh < h1; ++xh) {
        double row[W] = {};
        for (uint64_t xl = 0; xl < nl; ++xl)
          for (int s = 0; s < W; ++s) {
            const uint64_t i = ((xh << h) | xl) * W + s;
            const double prob = static_cast<double>(re[i]) * re[i] +
                                static_cast<double>(im[i]) * im[i];
            low[xl * W + s] += prob;
            row[s] += prob;
          }
        for (int s = 0; s < W; ++s) high[xh * W + s] = row[s];
      }
      for (size_t t = 0; t < nm; ++t) {
        double sum[W] = {};
        for (uint64_t x = h0 << h; x < h1 << h; ++x) {
          const double sign = Odd(x, mixed[t]->z_mask) ? -1.0 : 1.0;
          for (int s = 0; s < W; ++s) {
            const uint64_t i = x * W + s;
            sum[s] += sign * (static_cast<double>(re[i]) * re[i] +
                              static_cast<double>(im[i]) * im[i]);
          }
        }
        for (int s = 0; s < W; ++s) acc[t * W + s] = sum[s];
      }
      for (size_t t = 0; t < no; ++t) {
        const auto& term = p_.offdiagonal_terms[t];
        double sum_re[W] = {}, sum_im[W] = {};
        for (uint64_t x = h0 << h; x < h1 << h; ++x) {
          const double sign = Odd(x, term.z_mask) ? -1.0 : 1.0;
          const uint64_t y = x ^ term.x_mask;
          for (int s = 0; s < W; ++s) {
            const uint64_t i = x * W + s, j = y * W + s;
            sum_re[s] += sign * (static_cast<double>(re[j]) * re[i] + static_cast<double>(im[j]) * im[i]);
            sum_im[s] += sign * (static_cast<double>(re[j]) * im[i] - static_cast<double>(im[j]) * re[i]);
          }
        }
        for (int s = 0; s < W; ++s)  // times i^y_phase, real part
          acc[(nm + t) * W + s] = term.y_phase == 0   ? sum_re[s]
                                  : term.y_phase == 1 ? -sum_im[s]
                                  : term.y_phase == 2 ? -sum_re[s]
                                                      : sum_im[s];
      }
    };
    if (num_chunks == 1) run(0); else parallel(num_chunks, run);
    for (int c = 1; c < num_chunks; ++c)
      for (size_t i = 0; i < stride; ++i) partial[i] += partial[c * stride + i];
    const double* low = partial.data();
    const double* acc = low + nl * W;
    const int num_obs = p_.num_observables;
    for (int s = 0; s < lanes; ++s) {
      std::vector<double>& out = measure_out_;
      out.assign(num_obs, 0.0);
      size_t m = 0;
      for (const auto& term : p_.diagonal_terms) {
        double value = 0;
        switch (HalfOf(term.z_mask)) {
          case kLow:
            for (uint64_t xl = 0; xl < nl; ++xl)
              value += Odd(xl, term.z_mask) ? -low[xl * W + s] : low[xl * W + s];
            break;
          case kHigh:
            for (uint64_t xh = 0; xh < nh; ++xh)
              value += Odd(xh << h, term.z_mask) ? -high[xh * W + s] : high[xh * W + s];
            break;
          case kMixed:
            value = acc[m++ * W + s];
        }
        out[term.observable] += term.coeff * value;
      }
      for (size_t t = 0; t < no; ++t)
        out[p_.offdiagonal_terms[t].observable] +=
            p_.offdiagonal_terms[t].coeff * acc[(nm + t) * W + s];
      for (int o = 0; o < num_obs; ++o)
        expectations[s * num_obs + o] = static_cast<FP>(out[o]);
    }
  }

  // lambda = (sum_o upstream[o] O_o) phi, per lane.
  void ApplyObservables(const FP* upstream, int lanes, int num_chunks,
                        const ParallelChunks& parallel) {
    EnsureState(&lr_, &li_);
    const FP* re = sr_.data();
    const FP* im = si_.data();
    FP* lre = lr_.data();
    FP* lim = li_.data();
    const int num_obs = p_.num_observables;
    auto weight = [&](const typename Program<FP>::Term& term, int s) {
      return s < lanes ? upstream[s * num_obs + term.observable] * term.coeff : FP{0};
    };
    // Diagonal part: w(x) = low_table[x_low] + high_table[x_high] + mixed.
    const int h = LowBits();
    const uint64_t nl = uint64_t{1} << h, nh = size_ >> h;
    std::vector<FP>& low = weight_low_;
    std::vector<FP>& high = weight_high_;
    low.assign(nl * W, FP{0});
    high.assign(nh * W, FP{0});
    std::vector<FP>& mixed_w = diagonal_weights_;
    std::vector<uint64_t>& mixed_z = mixed_masks_;
    mixed_w.clear();
    mixed_z.clear();
    for (const auto& term : p_.diagonal_terms) {
      const Half half = HalfOf(term.z_mask);
      if (half == kMixed) mixed_z.push_back(term.z_mask);
      for (int s = 0; s < W; ++s) {
        const FP w = weight(term, s);
        if (half == kLow)
          for (uint64_t xl = 0; xl < nl; ++xl) low[xl * W + s] += Odd(xl, term.z_mask) ? -w : w;
        else if (half == kHigh)
          for (uint64_t xh = 0; xh < nh; ++xh) high[xh * W + s] += Odd(xh << h, term.z_mask) ? -w : w;
        else
          mixed_w.push_back(w);
      }
    }
    auto diagonal = [&](int chunk) {
      uint64_t x0, x1;
      ChunkRange(size_, num_chunks, chunk, &x0, &x1);
      for (uint64_t x = x0; x < x1; ++x) {
        FP w[W];
        for (int s = 0; s < W; ++s)
          w[s] = low[(x & (nl - 1)) * W + s] + high[(x >> h) * W + s];
        for (size_t t = 0; t < mixed_z.size(); ++t) {
          const FP sign = Odd(x, mixed_z[t]) ? FP{-1} : FP{1};
          for (int s = 0; s < W; ++s) w[s] += sign * mixed_w[t * W + s];
        }
        for (int s = 0; s < W; ++s) {
          lre[x * W + s] = w[s] * re[x * W + s];
          lim[x * W + s] = w[s] * im[x * W + s];
        }
      }
    };
    if (num_chunks == 1) diagonal(0); else parallel(num_chunks, diagonal);
    // lambda[x ^ xm] += w i^y (-1)^{|x & zm|} phi[x]; iterating over the
    // output index y = x ^ xm keeps chunks disjoint.
    for (const auto& term : p_.offdiagonal_terms) {
      FP fr[W], fi[W];
      for (int s = 0; s < W; ++s) {
        const FP w = weight(term, s);
        fr[s] = term.y_phase == 0 ? w : term.y_phase == 2 ? -w : FP{0};
        fi[s] = term.y_phase == 1 ? w : term.y_phase == 3 ? -w : FP{0};
      }
      auto offdiagonal = [&](int chunk) {
        uint64_t y0, y1;
        ChunkRange(size_, num_chunks, chunk, &y0, &y1);
        for (uint64_t y = y0; y < y1; ++y) {
          const uint64_t x = y ^ term.x_mask;
          const FP sign = Odd(x, term.z_mask) ? FP{-1} : FP{1};
          for (int s = 0; s < W; ++s) {
            const FP a = re[x * W + s], b = im[x * W + s];
            lre[y * W + s] += sign * (fr[s] * a - fi[s] * b);
            lim[y * W + s] += sign * (fr[s] * b + fi[s] * a);
          }
        }
      };
      if (num_chunks == 1) offdiagonal(0); else parallel(num_chunks, offdiagonal);
    }
  }

  // Un-applies block b from the state and the co-state, and adds the
  // derivatives of the angles it uses.
  void BackwardBlock(int b, double* d_angles, int64_t angle_stride, int lanes,
                     int num_chunks, const ParallelChunks& parallel) {
    const Block& blk = p_.blocks[b];
    if (blk.restore != kRestoreAdjoint) return BackwardNonUnitary(b, num_chunks, parallel);
    const int rsize = (IsDiagonal(blk) ? blk.dim : blk.dim * blk.dim) * W;
    std::vector<FP>& pr = r_partial_re_;
    std::vector<FP>& pi = r_partial_im_;
    if (blk.has_angles) {
      pr.assign(num_chunks * rsize, FP{0});
      pi.assign(num_chunks * rsize, FP{0});
    }
    auto run = [&](int chunk) {
      uint64_t g0, g1;
      ChunkRange(size_ >> blk.k, num_chunks, chunk, &g0, &g1);
      FP* rr = blk.has_angles ? pr.data() + chunk * rsize : nullptr;
      FP* ri = blk.has_angles ? pi.data() + chunk * rsize : nullptr;
      BackwardKernel(blk, b, Full(), g0, g1, rr, ri);
    };
    if (num_chunks == 1) run(0); else parallel(num_chunks, run);
    if (!blk.has_angles) return;
    for (int c = 1; c < num_chunks; ++c)
      for (int i = 0; i < rsize; ++i) {
        pr[i] += pr[c * rsize + i];
        pi[i] += pi[c * rsize + i];
      }
    if (IsDiagonal(blk))
      DiagonalAngleGradients(blk, block_mr_[b], block_mi_[b], pr.data(), pi.data(), d_angles,
                             angle_stride, lanes);
    else
      DenseAngleGradients(blk, block_mr_[b], block_mi_[b], pr.data(), pi.data(), d_angles,
                          angle_stride, lanes);
  }

  // Un-applies block b from groups [g0, g1) of v's state and co-state;
  // with r_re, adds the block's R there.
  void BackwardKernel(const Block& blk, int b, const Vectors& v, uint64_t g0, uint64_t g1,
                      FP* r_re, FP* r_im) {
    const FP* mr = block_mr_[b];
    const FP* mi = block_mi_[b];
    Dispatch(blk, [&](auto k, auto diagonal, auto real, auto imag) {
      if (r_re == nullptr) {
        if constexpr (diagonal)
          BackwardDiagonal<k, false, imag>(blk, mr, mi, v, g0, g1, r_re, r_im);
        else
          BackwardDense<k, real, false, imag>(blk, mr, mi, v, g0, g1, r_re, r_im);
      } else {
        if constexpr (diagonal)
          BackwardDiagonal<k, true, imag>(blk, mr, mi, v, g0, g1, r_re, r_im);
        else
          BackwardDense<k, real, true, imag>(blk, mr, mi, v, g0, g1, r_re, r_im);
      }
    });
  }

  // phi <- M^dagger phi and lambda <- M^dagger lambda and, with kWithR,
  // R[i][j] += phi_before[i] conj(lambda_after[j]), computed as M^dagger R'
  // with R' = sum phi_after (x) conj(lambda_after) one row at a time, so that
  // each loop keeps few accumulators and vectorizes.
  template <int K, bool kReal, bool kWithR, bool kImag>
  void BackwardDense(const Block& blk, const FP* m_re, const FP* m_im,
                     const Vectors& v, uint64_t g0, uint64_t g1, FP* r_re, FP* r_im) {
    constexpr int D = 1 << K;
    FP* const state[4] = {v.sr, v.si, v.lr, v.li};
    if constexpr (K <= 2 && kWithR) {
      return BackwardFused<K, kReal, kImag>(blk, m_re, m_im, v, g0, g1, r_re, r_im);
    }
    if constexpr (kWithR) {
      FP pr[D * D * W], pi[D * D * W];  // R'
      for (int i = 0; i < D; ++i) {
        FP rr[D * W] = {}, ri[D * W] = {};
        for (uint64_t g = g0; g < g1;) {
          const uint64_t len = RunLength(blk, g, g1);
          const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
          const FP* ar = state[0] + (base + blk.offsets[i]) * W;
          const FP* ai = state[1] + (base + blk.offsets[i]) * W;
          const FP* br[D];
          const FP* bi[D];
          for (int j = 0; j < D; ++j) {
            br[j] = state[2] + (base + blk.offsets[j]) * W;
            bi[j] = state[3] + (base + blk.offsets[j]) * W;
          }
          for (int j = 0; j < D; ++j) {  // one simple dot product each
            const FP* b_re = br[j];
            const FP* b_im = bi[j];
            FP* acc_re = rr + j * W;
            FP* acc_im = ri + j * W;
            for (uint64_t t = 0; t < len; ++t)
#pragma GCC ivdep
              for (int s = 0; s < W; ++s) {
                const uint64_t x = t * W + s;
                if constexpr (kImag) {
                  acc_re[s] += ar[x] * b_re[x] + ai[x] * b_im[x];
                  acc_im[s] += ai[x] * b_re[x] - ar[x] * b_im[x];
                } else {
                  acc_re[s] += ar[x] * b_re[x];
                }
              }
          }
          g += len;
        }
        std::copy(rr, rr + D * W, pr + i * D * W);
        std::copy(ri, ri + D * W, pi + i * D * W);
      }
      FP qr[D * D * W], qi[D * D * W];
      MatMul(m_re, m_im, pr, pi, D, true, qr, qi);
      for (int i = 0; i < D * D * W; ++i) {
        r_re[i] += qr[i];
        r_im[i] += qi[i];
      }
    }
    FP hr[D * D * W], hi[D * D * W];  // M^dagger
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j)
        for (int s = 0; s < W; ++s) {
          hr[(i * D + j) * W + s] = m_re[(j * D + i) * W + s];
          hi[(i * D + j) * W + s] = kReal ? FP{0} : -m_im[(j * D + i) * W + s];
        }
    ApplyDense<K, kReal, kImag>(blk, hr, hi, state[0], state[1], g0, g1);
    ApplyDense<K, kReal, kImag>(blk, hr, hi, state[2], state[3], g0, g1);
  }

  // BackwardDense for a block of K <= 2 qubits in a single pass over the
  // state: R' += phi_after (x) conj(lambda_after), then both un-applied by
  // M^dagger (R' and M^dagger stay in registers or L1; the pass streams the
  // two vectors once instead of 2 + 2^K times).
  template <int K, bool kReal, bool kImag>
  void BackwardFused(const Block& blk, const FP* m_re, const FP* m_im,
                     const Vectors& v, uint64_t g0, uint64_t g1, FP* r_re, FP* r_im) {
    constexpr int D = 1 << K;
    FP hr[D * D * W], hi[D * D * W];  // M^dagger
    for (int i = 0; i < D; ++i)
      for (int j = 0; j < D; ++j)
        for (int s = 0; s < W; ++s) {
          hr[(i * D + j) * W + s] = m_re[(j * D + i) * W + s];
          hi[(i * D + j) * W + s] = kReal ? FP{0} : -m_im[(j * D + i) * W + s];
        }
    FP rr[D * D * W] = {}, ri[D * D * W] = {};
    for (uint64_t g = g0; g < g1;) {
      const uint64_t len = RunLength(blk, g, g1);
      const uint64_t base = GroupBase(g, blk.sorted_qubits, K);
      FP* ar[D];
      FP* ai[D];
      FP* br[D];
      FP* bi[D];
      for (int l = 0; l < D; ++l) {
        const uint64_t off = (base + blk.offsets[l]) * W;
        ar[l] = v.sr + off;
        ai[l] = v.si + off;
        br[l] = v.lr + off;
        bi[l] = v.li + off;
      }
      for (uint64_t t = 0; t < len; ++t)
#pragma GCC ivdep
        for (int s = 0; s < W; ++s) {
          const uint64_t x = t * W + s;
          FP a[D], b[D], c[D], d[D];  // phi = a + i c, lambda = b + i d
          for (int l = 0; l < D; ++l) {
            a[l] = ar[l][x];
            b[l] = br[l][x];
            c[l] = kImag ? ai[l][x] : FP{0};
            d[l] = kImag ? bi[l][x] : FP{0};
          }
          for (int i = 0; i < D; ++i)
            for (int j = 0; j < D; ++j) {
              rr[(i * D + j) * W + s] += a[i] * b[j] + c[i] * d[j];
              if constexpr (kImag) ri[(i * D + j) * W + s] += c[i] * b[j] - a[i] * d[j];
            }
          for (int r = 0; r < D; ++r) {
            FP pa = 0, pc = 0, pb = 0, pd = 0;
            for (int q = 0; q < D; ++q) {
              const FP u = hr[(r * D + q) * W + s];
              pa += u * a[q];
              pb += u * b[q];
              if constexpr (kImag) {
                pc += u * c[q];
                pd += u * d[q];
              }
              if constexpr (!kReal) {
                const FP w = hi[(r * D + q) * W + s];
                pa -= w * c[q];
                pc += w * a[q];
                pb -= w * d[q];
                pd += w * b[q];
              }
            }
            ar[r][x] = pa;
            br[r][x] = pb;
            if constexpr (kImag) {
              ai[r][x] = pc;
              bi[r][x] = pd;
            }
          }
        }
      g += len;
    }
    FP qr[D * D * W], qi[D * D * W];
    MatMul(m_re, m_im, rr, ri, D, true, qr, qi);
    for (int i = 0; i < D * D * W; ++i) {
      r_re[i] += qr[i];
      r_im[i] += qi[i];
    }
  }

  template <int K, bool kWithR, bool kImag>
  void BackwardDiagonal(const Block& blk, const FP* m_re, const FP* m_im,
                        const Vectors& v, uint64_t g0, uint64_t g1, FP* r_re, FP* r_im) {
    constexpr int D = 1 << K;
    FP* const state[4] = {v.sr, v.si, v.lr, v.li};
    for (int l = 0; l < D; ++l) {
      FP dr[W], di[W], rr[W] = {}, ri[W] = {};
      for (int s = 0; s < W; ++s) {
        dr[s] = m_re[(l * D + l) * W + s];
        di[s] = -m_im[(l * D + l) * W + s];  // conj
      }
      for (uint64_t g = g0; g < g1;) {
        const uint64_t len = RunLength(blk, g, g1);
        const uint64_t off = (GroupBase(g, blk.sorted_qubits, K) + blk.offsets[l]) * W;
        FP* sr = state[0] + off;
        FP* si = state[1] + off;
        FP* lr = state[2] + off;
        FP* li = state[3] + off;
#pragma GCC ivdep
        for (uint64_t t = 0; t < len; ++t)
#pragma GCC ivdep
          for (int s = 0; s < W; ++s) {
            const uint64_t x = t * W + s;
            const FP a = sr[x], c = lr[x];
            const FP b = kImag ? si[x] : FP{0}, d = kImag ? li[x] : FP{0};
            const FP pa = dr[s] * a - di[s] * b, pb = dr[s] * b + di[s] * a;
            sr[x] = pa;
            lr[x] = dr[s] * c - di[s] * d;
            if constexpr (kImag) {
              si[x] = pb;
              li[x] = dr[s] * d + di[s] * c;
            }
            if constexpr (kWithR) {  // phi_before conj(lambda_after)
              rr[s] += pa * c + pb * d;
              ri[s] += pb * c - pa * d;
            }
          }
        g += len;
      }
      if constexpr (kWithR)
        for (int s = 0; s < W; ++s) {
          r_re[l * W + s] += rr[s];
          r_im[l * W + s] += ri[s];
        }
    }
  }

  // d/d angle_j = 2 Im Tr(H_j Q_j), Q_last = M R, Q_{j-1} = U_j^dagger Q_j U_j.
  void DenseAngleGradients(const Block& blk, const FP* mr, const FP* mi,
                           const FP* rr, const FP* ri, double* d_angles,
                           int64_t angle_stride, int lanes) {
    const int dim = blk.dim;
    FP qr[64 * W], qi[64 * W], tr[64 * W], ti[64 * W];
    MatMul(mr, mi, rr, ri, dim, false, qr, qi);
    for (int g = blk.first_gate + blk.num_gates - 1; g >= blk.first_gate; --g) {
      const Gate& gate = p_.gates[g];
      if (gate.type == kExponential) {
        const C* h = p_.hamiltonians.data() + p_.hamiltonian_offset[g];
        double im[W] = {};
        for (int i = 0; i < dim; ++i)
          for (int j = 0; j < dim; ++j) {
            const C a = h[i * dim + j];
            if (a.re == 0 && a.im == 0) continue;
            const int e = (j * dim + i) * W;
            for (int s = 0; s < W; ++s)  // lanes innermost: vectorizes
              im[s] += static_cast<double>(a.re) * qi[e + s] +
                       static_cast<double>(a.im) * qr[e + s];
          }
        for (int s = 0; s < lanes; ++s)
          d_angles[s * angle_stride + gate.angle_slot] += 2.0 * im[s];
      }
      if (g == blk.first_gate) break;
      const FP* ur = gate_re_.data() + gate_offset_[g];
      const FP* ui = gate_im_.data() + gate_offset_[g];
      MatMul(qr, qi, ur, ui, dim, false, tr, ti);  // Q U
      MatMul(ur, ui, tr, ti, dim, true, qr, qi);   // U^dagger (Q U)
    }
  }

  // Diagonal blocks commute: d/d angle_j = 2 Im sum_a H_j,aa M_aa R_aa.
  void DiagonalAngleGradients(const Block& blk, const FP* mr, const FP* mi,
                              const FP* rr, const FP* ri, double* d_angles,
                              int64_t angle_stride, int lanes) {
    const int dim = blk.dim;
    for (int g = blk.first_gate; g < blk.first_gate + blk.num_gates; ++g) {
      const Gate& gate = p_.gates[g];
      if (gate.type != kExponential) continue;
      const C* h = p_.hamiltonians.data() + p_.hamiltonian_offset[g];
      double im[W] = {};
      for (int a = 0; a < dim; ++a) {
        const FP hr = h[a * dim + a].re, hi = h[a * dim + a].im;
        const int e = (a * dim + a) * W;
        for (int s = 0; s < W; ++s) {  // Im(h m r), lanes innermost
          const FP hmr = hr * mr[e + s] - hi * mi[e + s];
          const FP hmi = hr * mi[e + s] + hi * mr[e + s];
          im[s] += static_cast<double>(hmr * ri[a * W + s] + hmi * rr[a * W + s]);
        }
      }
      for (int s = 0; s < lanes; ++s)
        d_angles[s * angle_stride + gate.angle_slot] += 2.0 * im[s];
    }
  }

  const Program<FP>& p_;
  const uint64_t size_;
  std::vector<int64_t> block_offset_, gate_offset_;
  // Per-lane matrices of every gate and block, real and imaginary apart.
  std::vector<FP> block_re_, block_im_, gate_re_, gate_im_;
  // Where each block's matrix lives (its own storage or its single gate's),
  // and the blocks of several gates of which some depend on angles.
  std::vector<const FP*> block_mr_, block_mi_;
  std::vector<int> variable_blocks_;
  // 1, then the cosine and sine of each of the program's phases, lane by lane.
  std::vector<FP> values_;
  // State and co-state, lanes interleaved, real and imaginary apart.
  std::vector<FP> sr_, si_, lr_, li_;
  // This sweep keeps the state real: a real program from a real start.
  bool real_state_ = false;
  // Scratch reused across samples and blocks: no allocation in the sweeps.
  std::vector<double> measure_partial_, measure_high_, measure_out_;
  std::vector<FP> diagonal_weights_, weight_low_, weight_high_;
  std::vector<FP> r_partial_re_, r_partial_im_;

  std::vector<uint64_t> mixed_masks_;
  FP scratch_re_[64 * W], scratch_im_[64 * W];
  // Non-unitary blocks: the inverses (per lane, at inverse_offset_[block]),
  // a block's adjoint, and the checkpoints of the states before them.
  std::vector<int64_t> inverse_offset_;
  std::vector<FP> inverse_re_, inverse_im_, adjoint_re_, adjoint_im_, checkpoints_;
  std::vector<double> jump_partial_;
};

}  // namespace qkh

#endif  // QKERAS_HYBRID_SIMULATOR_SIMULATOR_H_
