// Read-outs of density programs (program.h): a density matrix rho on n qubits
// is the vector v = vec(rho), v[r + (c << n)] = rho[r, c], on 2n qubits, and
// the simulator runs it like a state (U on the row qubits, conj(U) on the
// column qubits, superoperators for channels). Here: tr(O rho) and its
// co-state, marginal probabilities (the diagonal) and their co-state, and
// the basis changes of sampled Pauli measurements. All work on the
// simulator's lane-interleaved vectors (lane s of entry x at x * W + s).
//
// The read-outs are linear in v: tr(O rho) = <w|v> with w the co-state
// below, so the gradient is Re <w|dv/d angle> = 2 Re <w/2|dv/d angle>, the
// simulator's adjoint pass from the co-state w / 2.
#ifndef QKERAS_HYBRID_SIMULATOR_DENSITY_H_
#define QKERAS_HYBRID_SIMULATOR_DENSITY_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "measure.h"
#include "simulator.h"

namespace qkh {

// The index in v of rho[r, r ^ x_mask]: P rho's trace picks these entries.
inline uint64_t DensityIndex(uint64_t r, uint64_t x_mask, int n) {
  return r | ((r ^ x_mask) << n);
}

// out[s * num_observables + o] = tr(O_o rho_s) for lanes s < lanes, summed
// in double. With P = i^y X^x Z^z, P[r ^ x, r] = i^y (-1)^|r & z|, so
// tr(P rho) = sum_r i^y (-1)^|r & z| rho[r, r ^ x]; the real part is kept
// (the trace of a Hermitian rho's Pauli is real).
template <typename FP, int W>
void DensityExpectations(Simulator<FP, W>* sim, const Program<FP>& p, int lanes, FP* out) {
  const int n = p.num_qubits / 2;
  const uint64_t dim = uint64_t{1} << n;
  const FP* re = sim->StateRe();
  const FP* im = sim->StateIm();
  const bool real = sim->real_state();
  std::vector<double> sums(static_cast<size_t>(p.num_observables) * W, 0.0);
  for (const auto* terms : {&p.diagonal_terms, &p.offdiagonal_terms})
    for (const auto& term : *terms) {
      const bool odd = term.y_phase % 2 != 0;  // i^y is imaginary
      if (odd && real) continue;                // tr(P rho) = 0
      const FP* part = odd ? im : re;
      double acc[W] = {};
      for (uint64_t r = 0; r < dim; ++r) {
        const FP* v = part + DensityIndex(r, term.x_mask, n) * W;
        const double sign = __builtin_parityll(r & term.z_mask) ? -1.0 : 1.0;
        for (int s = 0; s < W; ++s) acc[s] += sign * static_cast<double>(v[s]);
      }
      // Re(i^y (a + ib)): a, -b, -a, b for y = 0, 1, 2, 3.
      const double factor = (term.y_phase == 0 || term.y_phase == 3) ? 1.0 : -1.0;
      for (int s = 0; s < W; ++s)
        sums[term.observable * W + s] += static_cast<double>(term.coeff) * factor * acc[s];
    }
  for (int s = 0; s < lanes; ++s)
    for (int o = 0; o < p.num_observables; ++o)
      out[s * p.num_observables + o] = static_cast<FP>(sums[o * W + s]);
}

// The co-state for the gradient of sum_o upstream[s][o] tr(O_o rho_s):
// lambda = w / 2, w[DensityIndex(r)] = sum of conj(coefficient of rho[r, r ^ x])
// (upstream has `lanes` rows of num_observables; padding lanes get zero).
template <typename FP, int W>
void DensityObservableCostate(Simulator<FP, W>* sim, const Program<FP>& p, const FP* upstream,
                              int lanes, int num_chunks, const ParallelChunks& parallel) {
  sim->ZeroCostate(num_chunks, parallel);
  const int n = p.num_qubits / 2;
  const uint64_t dim = uint64_t{1} << n;
  FP* lr = sim->CostateRe();
  FP* li = sim->CostateIm();
  for (const auto* terms : {&p.diagonal_terms, &p.offdiagonal_terms})
    for (const auto& term : *terms) {
      FP w[W];
      for (int s = 0; s < W; ++s)
        w[s] = s < lanes ? FP{0.5} * upstream[s * p.num_observables + term.observable] * term.coeff
                         : FP{0};
      // conj(i^y) = 1, -i, -1, i for y = 0, 1, 2, 3.
      FP* part = term.y_phase % 2 == 0 ? lr : li;
      const FP factor = (term.y_phase == 0 || term.y_phase == 3) ? FP{1} : FP{-1};
      for (uint64_t r = 0; r < dim; ++r) {
        FP* v = part + DensityIndex(r, term.x_mask, n) * W;
        const FP sign = __builtin_parityll(r & term.z_mask) ? -factor : factor;
        for (int s = 0; s < W; ++s) v[s] += sign * w[s];
      }
    }
}

// out[s * outcomes + gather(r)] = sum of rho_s[r, r] (real parts, in double)
// over the n-qubit index r: the marginal distribution of the gathered qubits.
template <typename FP, int W>
void DensityMarginals(Simulator<FP, W>* sim, int n, const BitGather& gather, uint64_t outcomes,
                      double* out) {
  const uint64_t dim = uint64_t{1} << n;
  const FP* re = sim->StateRe();
  std::fill(out, out + W * outcomes, 0.0);
  for (uint64_t r = 0; r < dim; ++r) {
    const FP* v = re + DensityIndex(r, 0, n) * W;
    const uint64_t m = gather(r);
    for (int s = 0; s < W; ++s) out[s * outcomes + m] += static_cast<double>(v[s]);
  }
}

// The co-state for the gradient of sum_m upstream[s][m] p_s[m]: lambda = w / 2,
// w[DensityIndex(r, 0)] = upstream[s][gather(r)].
template <typename FP, int W>
void DensityMarginalCostate(Simulator<FP, W>* sim, int n, const BitGather& gather,
                            uint64_t outcomes, const FP* upstream, int lanes, int num_chunks,
                            const ParallelChunks& parallel) {
  sim->ZeroCostate(num_chunks, parallel);
  const uint64_t dim = uint64_t{1} << n;
  FP* lr = sim->CostateRe();
  for (uint64_t r = 0; r < dim; ++r) {
    FP* v = lr + DensityIndex(r, 0, n) * W;
    const uint64_t m = gather(r);
    for (int s = 0; s < lanes; ++s) v[s] = FP{0.5} * upstream[s * outcomes + m];
  }
}

// Readout errors on a distribution p over the outcomes of measured qubits:
// the qubit at bit position positions[j] reads 1 for a true 0 with
// probability errors[2 j] and 0 for a true 1 with probability errors[2 j + 1].
// Exactly the distribution of flipping each sampled bit.
inline void ApplyReadoutErrors(double* p, uint64_t outcomes, const std::vector<int>& positions,
                               const std::vector<double>& errors) {
  for (size_t j = 0; j < positions.size(); ++j) {
    const double e0 = errors[2 * j], e1 = errors[2 * j + 1];
    if (e0 == 0 && e1 == 0) continue;
    const uint64_t bit = uint64_t{1} << positions[j];
    for (uint64_t m = 0; m < outcomes; ++m) {
      if (m & bit) continue;
      const double a = p[m], b = p[m | bit];
      p[m] = (1 - e0) * a + e1 * b;
      p[m | bit] = e0 * a + (1 - e1) * b;
    }
  }
}

// The measurement basis of qubit q in a Pauli group: Z (also for qubits the
// group does not measure), X, or Y.
enum class Basis { kZ, kX, kY };
inline Basis BasisOf(uint64_t x_mask, uint64_t z_mask, int q) {
  if (!(x_mask >> q & 1)) return Basis::kZ;
  return (z_mask >> q & 1) ? Basis::kY : Basis::kX;
}

// The rotation R_b that maps basis b to Z: I, H, H S^dagger.
inline void BasisRotation(Basis b, double re[4], double im[4]) {
  const double h = 1 / std::sqrt(2.0);
  const double zr[4] = {1, 0, 0, 1}, zi[4] = {0, 0, 0, 0};
  const double xr[4] = {h, h, h, -h}, xi[4] = {0, 0, 0, 0};
  const double yr[4] = {h, 0, h, 0}, yi[4] = {0, -h, 0, h};
  const double* r = b == Basis::kZ ? zr : b == Basis::kX ? xr : yr;
  const double* i = b == Basis::kZ ? zi : b == Basis::kX ? xi : yi;
  std::copy(r, r + 4, re);
  std::copy(i, i + 4, im);
}

// v <- (M on qubit q) v for a 2x2 complex matrix, all lanes.
template <typename FP, int W>
void ApplyQubitMatrix(FP* re, FP* im, int num_qubits, int q, const double mr[4],
                      const double mi[4], int num_chunks, const ParallelChunks& parallel) {
  const uint64_t bit = uint64_t{1} << q, low = bit - 1;
  const uint64_t pairs = (uint64_t{1} << num_qubits) / 2;
  const FP ar = mr[0], br = mr[1], cr = mr[2], dr = mr[3];
  const FP ai = mi[0], bi = mi[1], ci = mi[2], di = mi[3];
  auto run = [&](int chunk) {
    uint64_t i0, i1;
    ChunkRange(pairs, num_chunks, chunk, &i0, &i1);
    for (uint64_t i = i0; i < i1; ++i) {
      const uint64_t a = ((i & ~low) << 1) | (i & low), b = a | bit;
      FP* xr = re + a * W;
      FP* xi = im + a * W;
      FP* yr = re + b * W;
      FP* yi = im + b * W;
      for (int s = 0; s < W; ++s) {
        const FP ur = xr[s], ui = xi[s], vr = yr[s], vi = yi[s];
        xr[s] = ar * ur - ai * ui + br * vr - bi * vi;
        xi[s] = ar * ui + ai * ur + br * vi + bi * vr;
        yr[s] = cr * ur - ci * ui + dr * vr - di * vi;
        yi[s] = cr * ui + ci * ur + dr * vi + di * vr;
      }
    }
  };
  if (num_chunks == 1) run(0); else parallel(num_chunks, run);
}

// Rotates rho (all lanes) from measuring the Pauli group (from_x, from_z) to
// measuring (to_x, to_z) in the computational basis: rho <- M rho M^dagger
// with M = R_to R_from^dagger on each of the n qubits, i.e. M on row qubit
// q and conj(M) on column qubit q + n. The result is complex whatever the
// state was (its imaginary parts must be zero if the sweep kept it real).
template <typename FP, int W>
void DensityChangeBasis(Simulator<FP, W>* sim, int n, uint64_t from_x, uint64_t from_z,
                        uint64_t to_x, uint64_t to_z, int num_chunks,
                        const ParallelChunks& parallel) {
  for (int q = 0; q < n; ++q) {
    const Basis from = BasisOf(from_x, from_z, q), to = BasisOf(to_x, to_z, q);
    if (from == to) continue;
    double tr[4], ti[4], fr[4], fi[4], mr[4], mi[4];
    BasisRotation(to, tr, ti);
    BasisRotation(from, fr, fi);
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {  // (R_to R_from^dagger)[i][j]
        double sr = 0, si = 0;
        for (int k = 0; k < 2; ++k) {
          const double ar = tr[2 * i + k], ai = ti[2 * i + k];
          const double br = fr[2 * j + k], bi = -fi[2 * j + k];  // conj(R_from[j][k])
          sr += ar * br - ai * bi;
          si += ar * bi + ai * br;
        }
        mr[2 * i + j] = sr;
        mi[2 * i + j] = si;
      }
    ApplyQubitMatrix<FP, W>(sim->StateRe(), sim->StateIm(), 2 * n, q, mr, mi, num_chunks,
                            parallel);
    const double ci[4] = {-mi[0], -mi[1], -mi[2], -mi[3]};
    ApplyQubitMatrix<FP, W>(sim->StateRe(), sim->StateIm(), 2 * n, q + n, mr, ci, num_chunks,
                            parallel);
  }
}

}  // namespace qkh

#endif  // QKERAS_HYBRID_SIMULATOR_DENSITY_H_
