// A compiled circuit as the simulator runs it: fused gate blocks and Pauli-sum
// observables, decoded once per op call from the flat program tensors and
// validated so that a malformed program can never touch memory out of range.
//
// Flat layout (built by qkeras_hybrid/circuits/program.py):
//   block_meta int32 [NB, 7]: k, q0, q1, q2, kind, first_gate, num_gates
//     A block acts on k (1..3) qubits; the first listed qubit is the most
//     significant bit of the block's local index (Cirq's convention).
//     kind 0 = dense, 1 = diagonal (every gate in it is diagonal),
//     2 = real dense (its matrix is real for every angle, e.g. Ry and CNOT),
//     3 = real diagonal (constant and real, e.g. CZ). A circuit of real
//     blocks measured by real Pauli terms keeps a real state throughout.
//   gate_meta int32 [NG, 4]: type, angle_slot, data_offset, num_terms
//     type 0 = constant: data holds a 2^k x 2^k complex matrix (re, im pairs).
//     type 1 = exponential exp(-i * angle * H), H = sum_t eig_t * P_t: data
//       holds num_terms records of (eig_t, P_t as 2^k x 2^k complex matrix).
//     type 2 = Kraus selection (trajectories; pure programs only): data holds
//       num_terms = m matrices; the angle slot's value, an integer k in
//       [0, m) per batch row, selects matrix k. Every matrix is unitary.
//     type 3 = Kraus selection whose matrices need not be unitary (e.g.
//       amplitude damping's K_k / sqrt(q_k)): the adjoint pass restores the
//       state from a checkpoint that the forward sweep saved.
//     type 4 = superoperator (density programs only): a constant non-unitary
//       matrix S; num_terms = 1, or 2 when data also holds S^-1 after S, with
//       which the adjoint pass may restore the state instead of keeping a
//       checkpoint (see Block::restore).
//     type 5 = quantum-jump selection (trajectories; pure programs only):
//       data holds the num_terms = m Kraus operators K_k of a channel; the
//       angle slot holds a uniform u in [0, 1) per batch row, which picks k
//       with probability ||K_k psi||^2 / sum_j ||K_j psi||^2 for the state
//       psi reaching the gate, and the gate applies K_k scaled so that the
//       norm of psi is kept (exact for trace-preserving channels). Such
//       programs have no adjoint gradient (the choice depends on the state).
//     Gates of types 2..5 are alone in their block, and never differentiated
//     (a selection slot's derivative is 0).
//   gate_data float64 [D]
//   pauli_masks int64 [O, T, 2]: x mask, z mask of each term (bit q = qubit q)
//   pauli_coeffs float64 [O, T]: real coefficient of each term (0 pads)
//
// Density programs (ProgramMode::kDensity, the QkerasHybrid>Density* ops)
// run rho on n physical qubits as the vector vec(rho)[r + (c << n)] =
// rho[r, c] on num_qubits = 2n qubits: row qubit q is register qubit q,
// column qubit q is register qubit q + n. block_meta may then have an 8th
// column, q3, the fourth qubit of a 4-qubit block (the superoperator of a
// 2-qubit channel on Q + (Q + n)); only superoperator blocks may have 4
// qubits. Pauli masks act on the n physical qubits (bits below n).
#ifndef QKERAS_HYBRID_SIMULATOR_PROGRAM_H_
#define QKERAS_HYBRID_SIMULATOR_PROGRAM_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

namespace qkh {

// Unitary blocks have up to 3 qubits; superoperator blocks up to 4.
constexpr int kMaxBlockQubits = 3;
constexpr int kMaxSuperBlockQubits = 4;
constexpr int kBlockMetaWidth = 7;
constexpr int kDensityBlockMetaWidth = 8;
constexpr int kGateMetaWidth = 4;
constexpr int kMaxQubits = 62;  // masks are 64-bit; memory is checked apart

enum BlockKind { kDense = 0, kDiagonal = 1, kRealDense = 2, kRealDiagonal = 3 };
enum GateType {
  kConstant = 0,
  kExponential = 1,
  kSelection = 2,
  kNonUnitarySelection = 3,
  kSuperoperator = 4,
  kJumpSelection = 5
};
enum class ProgramMode { kPure, kDensity };
// How the adjoint pass gets a block's input state back from its output: by
// the adjoint of its (unitary) matrix, by a given inverse, or from a
// checkpoint of the state saved by the forward sweep.
enum Restore { kRestoreAdjoint = 0, kRestoreInverse = 1, kRestoreCheckpoint = 2 };
// Largest product of the norms ||S^-1|| of the blocks restored by their
// inverse between two checkpoints: it bounds how much the restored states'
// rounding errors can grow (per precision: float32 has 2^29 times less).
template <typename FP>
constexpr double kInverseGrowthBudget = std::is_same<FP, float>::value ? 4.0 : 1e4;

template <typename FP>
struct Complex {
  FP re, im;
};

template <typename FP>
inline Complex<FP> Mul(Complex<FP> a, Complex<FP> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
template <typename FP>
inline Complex<FP> MulConj(Complex<FP> a, Complex<FP> b) {  // conj(a) * b
  return {a.re * b.re + a.im * b.im, a.re * b.im - a.im * b.re};
}

struct Block {
  int k = 1;
  int dim = 2;
  int qubits[kMaxSuperBlockQubits] = {0, 0, 0, 0};
  int sorted_qubits[kMaxSuperBlockQubits] = {0, 0, 0, 0};
  uint64_t offsets[1 << kMaxSuperBlockQubits] = {};  // local index -> state offset
  int kind = kDense;
  int first_gate = 0;
  int num_gates = 0;
  bool has_angles = false;
  // A block of one gate of type 2..4 (a selection or a superoperator).
  bool special = false;
  int restore = kRestoreAdjoint;
  int checkpoint = -1;  // index of its checkpoint, with kRestoreCheckpoint
};

struct Gate {
  int type = kConstant;
  int angle_slot = -1;
  int64_t data_offset = 0;
  int num_terms = 0;
  int block = 0;  // the block that owns the gate, set while decoding
};

template <typename FP>
struct Program {
  int num_qubits = 0;
  int num_angles = 0;
  ProgramMode mode = ProgramMode::kPure;
  std::vector<Block> blocks;
  // Checkpoints the forward sweep saves for the adjoint pass (blocks with
  // kRestoreCheckpoint).
  int num_checkpoints = 0;
  // The angle slots that select Kraus operators: values must be integers in
  // [0, count).
  struct Selection {
    int slot, count, gate;
  };
  std::vector<Selection> selections;
  // The quantum-jump selections (type 5): slots hold u in [0, 1).
  std::vector<Selection> jumps;
  std::vector<Gate> gates;
  // Entries of all block and gate matrices (a simulator keeps each per lane).
  int64_t matrix_entries = 0;
  std::vector<FP> data;  // gate data in the simulation precision
  // Generator H = sum_t eig_t P_t of every exponential gate, dim x dim,
  // at hamiltonian_offset[g] in `hamiltonians`.
  std::vector<Complex<FP>> hamiltonians;
  std::vector<int64_t> hamiltonian_offset;
  // The distinct phases angle * eig of each exponential gate's terms (angle
  // slot, eigenvalue > 0): a term of eigenvalue -e shares the sine and cosine
  // of the term of e (Rx, Ry, Rz, ... have terms of +-1/2).
  struct Phase {
    int slot;
    FP eig;
  };
  std::vector<Phase> phases;
  // The largest |eig| of any phase: angles are checked against it so that
  // angle * eig cannot overflow.
  double max_abs_eig = 0;
  // Every exponential gate's matrix as a linear combination of the values
  // 1 (value 0), cos(-angle * eig_i) (value 1 + 2i) and sin(-angle * eig_i)
  // (value 2 + 2i) of its phases i: U[entry] = sum (re + i im) * value over
  // the gate's contributions, those of gate g at [contributions_begin[g],
  // contributions_begin[g + 1]). Merged per (entry, value), zeros dropped.
  struct Contribution {
    int entry;
    int value;
    FP re, im;
  };
  std::vector<Contribution> contributions;
  std::vector<int> contributions_begin;

  int num_observables = 0;
  int terms_per_observable = 0;
  // Flattened [O * T]; terms with a zero coefficient are dropped.
  struct Term {
    int observable;
    uint64_t x_mask, z_mask;
    int y_phase;  // P = i^y_phase X^x Z^z, y_phase = number of Y factors mod 4
    FP coeff;
  };
  std::vector<Term> diagonal_terms;
  std::vector<Term> offdiagonal_terms;
  // Every block is real and no term has an odd number of Y factors: the
  // state and co-state stay real, and the kernels skip imaginary parts.
  bool real_state = false;
};

inline std::string Str(int64_t v) { return std::to_string(v); }
// A value for an error message: short, and "inf" / "nan" as such.
inline std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}
template <typename FP>
constexpr const char* FloatName() {
  return std::is_same<FP, float>::value ? "float32" : "float64";
}
// What a finite float64 that is not finite in FP is called in messages.
template <typename FP>
std::string NotFiniteIn(double v) {
  return std::isfinite(v) ? " = " + Num(v) + " overflows " + FloatName<FP>()
                          : " is not finite (" + Num(v) + ")";
}
// Counts are kept in int by the simulator.
constexpr int64_t kMaxCount = std::numeric_limits<int32_t>::max();

// sqrt(||A||_1 ||A||_inf) >= ||A||_2 of a dim x dim complex matrix stored as
// (re, im) pairs.
inline double NormBound(const double* a, int dim) {
  double col = 0, row = 0;
  for (int i = 0; i < dim; ++i) {
    double c = 0, r = 0;
    for (int j = 0; j < dim; ++j) {
      c += std::hypot(a[2 * (j * dim + i)], a[2 * (j * dim + i) + 1]);
      r += std::hypot(a[2 * (i * dim + j)], a[2 * (i * dim + j) + 1]);
    }
    col = std::max(col, c);
    row = std::max(row, r);
  }
  return std::sqrt(col * row);
}

// How the adjoint pass restores the input state of each non-unitary block.
// Going backward from the end, a superoperator with a given inverse is
// un-applied by it while the product of the inverses' norms since the last
// checkpoint stays within kInverseGrowthBudget<FP> (the states it restores
// then keep a bounded error); other non-unitary blocks take a checkpoint.
template <typename FP>
void ChooseRestores(const double* gate_data, Program<FP>* p) {
  double growth = 1;
  p->num_checkpoints = 0;
  for (int b = static_cast<int>(p->blocks.size()) - 1; b >= 0; --b) {
    Block& blk = p->blocks[b];
    const Gate& gate = p->gates[blk.first_gate];
    blk.restore = kRestoreAdjoint;
    if (!blk.special || gate.type == kSelection) continue;
    if (gate.type == kSuperoperator && gate.num_terms == 2) {
      const double norm =
          NormBound(gate_data + gate.data_offset + 2 * blk.dim * blk.dim, blk.dim);
      if (growth * norm <= kInverseGrowthBudget<FP>) {
        growth *= norm;
        blk.restore = kRestoreInverse;
        p->matrix_entries += blk.dim * blk.dim;  // the inverse, per lane
        continue;
      }
    }
    blk.restore = kRestoreCheckpoint;
    growth = 1;
  }
  // Checkpoints are numbered in forward order.
  for (Block& blk : p->blocks)
    if (blk.restore == kRestoreCheckpoint) blk.checkpoint = p->num_checkpoints++;
}

// Decodes and validates the flat program. Returns an empty string on success,
// else a message naming the tensor, the index and the bad value.
template <typename FP>
std::string DecodeProgram(int64_t num_qubits, const int32_t* block_meta,
                          int64_t num_blocks, const int32_t* gate_meta,
                          int64_t num_gates, const double* gate_data,
                          int64_t data_size, const int64_t* pauli_masks,
                          const double* pauli_coeffs, int64_t num_observables,
                          int64_t terms_per_observable, int64_t num_angles,
                          Program<FP>* p, int block_meta_width = kBlockMetaWidth,
                          ProgramMode mode = ProgramMode::kPure) {
  const bool density = mode == ProgramMode::kDensity;
  if (num_qubits < 1 || num_qubits > kMaxQubits)
    return "num_qubits must be in [1, " + Str(kMaxQubits) + "], got " +
           Str(num_qubits);
  if (density && num_qubits % 2 != 0)
    return "num_qubits of a density program must be even (2n: n row qubits, then n column "
           "qubits), got " + Str(num_qubits);
  p->mode = mode;
  // Tensors with a zero dimension can have any other dimension: bound them
  // all before a count is narrowed to int or a loop runs over it.
  const struct {
    const char* what;
    int64_t count;
  } counts[] = {{"blocks (block_meta rows)", num_blocks},
                {"gates (gate_meta rows)", num_gates},
                {"observables (pauli_masks dimension 0)", num_observables},
                {"terms per observable (pauli_masks dimension 1)", terms_per_observable},
                {"angles (angles dimension 1)", num_angles}};
  for (const auto& count : counts)
    if (count.count > kMaxCount)
      return std::string("too many ") + count.what + ": " + Str(count.count) +
             ", at most " + Str(kMaxCount);
  p->num_qubits = static_cast<int>(num_qubits);
  p->num_angles = static_cast<int>(num_angles);
  p->data.resize(data_size);
  for (int64_t i = 0; i < data_size; ++i) {
    p->data[i] = static_cast<FP>(gate_data[i]);
    if (!std::isfinite(p->data[i]))
      return "gate_data[" + Str(i) + "]" + NotFiniteIn<FP>(gate_data[i]);
  }

  p->gates.resize(num_gates);
  std::vector<int> owner(num_gates, -1);
  p->blocks.resize(num_blocks);
  for (int64_t b = 0; b < num_blocks; ++b) {
    const int32_t* m = block_meta + b * block_meta_width;
    const std::string where = "block_meta[" + Str(b) + "]";
    Block& blk = p->blocks[b];
    blk.k = m[0];
    if (blk.k < 1 || blk.k > kMaxSuperBlockQubits ||
        (blk.k == kMaxSuperBlockQubits && block_meta_width < kDensityBlockMetaWidth))
      return where + ": block size must be 1, 2 or 3 qubits" +
             (density ? std::string(" (4 for a superoperator, with block_meta's 8th column)")
                      : std::string()) + ", got " + Str(m[0]);
    blk.dim = 1 << blk.k;
    p->matrix_entries += blk.dim * blk.dim;
    for (int j = 0; j < blk.k; ++j) {
      const int q = m[j < 3 ? 1 + j : 7];
      if (q < 0 || q >= num_qubits)
        return where + ": qubit index " + Str(q) + " out of range [0, " +
               Str(num_qubits) + ")";
      for (int i = 0; i < j; ++i)
        if (blk.qubits[i] == q) return where + ": qubit " + Str(q) + " repeated";
      blk.qubits[j] = q;
      blk.sorted_qubits[j] = q;
    }
    for (int i = 1; i < blk.k; ++i)  // insertion sort of at most 4 items
      for (int j = i; j > 0 && blk.sorted_qubits[j - 1] > blk.sorted_qubits[j]; --j)
        std::swap(blk.sorted_qubits[j - 1], blk.sorted_qubits[j]);
    for (int l = 0; l < blk.dim; ++l) {
      uint64_t off = 0;
      for (int j = 0; j < blk.k; ++j)
        if ((l >> (blk.k - 1 - j)) & 1) off |= uint64_t{1} << blk.qubits[j];
      blk.offsets[l] = off;
    }
    blk.kind = m[4];
    if (blk.kind < kDense || blk.kind > kRealDiagonal)
      return where + ": unknown block kind " + Str(m[4]);
    blk.first_gate = m[5];
    blk.num_gates = m[6];
    if (blk.num_gates < 1 || blk.first_gate < 0 ||
        int64_t{blk.first_gate} + blk.num_gates > num_gates)
      return where + ": gate range [" + Str(m[5]) + ", " +
             Str(int64_t{m[5]} + m[6]) + ") is not inside gate_meta of " +
             Str(num_gates) + " gates";
    for (int g = blk.first_gate; g < blk.first_gate + blk.num_gates; ++g) {
      if (owner[g] != -1)
        return where + ": gate " + Str(g) + " already belongs to block " +
               Str(owner[g]);
      owner[g] = static_cast<int>(b);
    }
  }

  p->hamiltonian_offset.assign(num_gates, -1);
  for (int64_t g = 0; g < num_gates; ++g) {
    const int32_t* m = gate_meta + g * kGateMetaWidth;
    const std::string where = "gate_meta[" + Str(g) + "]";
    if (owner[g] < 0) return where + ": gate belongs to no block";
    Gate& gate = p->gates[g];
    gate.block = owner[g];
    const Block& blk = p->blocks[owner[g]];
    const int64_t mat = int64_t{2} * blk.dim * blk.dim;
    p->matrix_entries += blk.dim * blk.dim;
    gate.type = m[0];
    gate.angle_slot = m[1];
    gate.data_offset = m[2];
    gate.num_terms = m[3];
    int64_t needed = 0;
    if (gate.type == kConstant) {
      needed = mat;
    } else if (gate.type == kExponential) {
      if (gate.angle_slot < 0 || gate.angle_slot >= num_angles)
        return where + ": angle slot " + Str(m[1]) + " out of range [0, " +
               Str(num_angles) + ")";
      if (gate.num_terms < 1 || gate.num_terms > blk.dim)
        return where + ": num_terms must be in [1, " + Str(blk.dim) +
               "], got " + Str(m[3]);
      needed = gate.num_terms * (1 + mat);
      p->blocks[owner[g]].has_angles = true;
    } else if (gate.type == kSelection || gate.type == kNonUnitarySelection ||
               gate.type == kJumpSelection) {
      if (density)
        return where + ": a Kraus selection (gate type " + Str(m[0]) +
               ") runs in the pure-state ops only; a density program has superoperators (type 4)";
      if (gate.angle_slot < 0 || gate.angle_slot >= num_angles)
        return where + ": angle slot " + Str(m[1]) + " out of range [0, " +
               Str(num_angles) + ")";
      // Each option is a matrix of its own: bound them so the product fits.
      if (gate.num_terms < 1 || gate.num_terms > data_size / mat)
        return where + ": the number of Kraus matrices must be in [1, " +
               Str(data_size / mat) + "] (gate_data's size), got " + Str(m[3]);
      if (gate.type == kJumpSelection && blk.k > 2)
        return where + ": a quantum-jump selection acts on 1 or 2 qubits, got " + Str(blk.k);
      needed = gate.num_terms * mat;
      (gate.type == kJumpSelection ? p->jumps : p->selections)
          .push_back({gate.angle_slot, gate.num_terms, static_cast<int>(g)});
    } else if (gate.type == kSuperoperator) {
      if (!density)
        return where + ": a superoperator (gate type 4) runs only in the density ops "
               "(QkerasHybrid>Density*)";
      if (gate.num_terms != 1 && gate.num_terms != 2)
        return where + ": num_terms of a superoperator must be 1 (S) or 2 (S, then S^-1), got " +
               Str(m[3]);
      needed = gate.num_terms * mat;
    } else {
      return where + ": unknown gate type " + Str(m[0]);
    }
    if (gate.type >= kSelection) {
      if (blk.num_gates != 1)
        return where + ": a gate of type " + Str(m[0]) + " must be alone in its block (block " +
               Str(owner[g]) + " has " + Str(blk.num_gates) + " gates)";
      p->blocks[owner[g]].special = true;
    }
    if (blk.k > kMaxBlockQubits && gate.type != kSuperoperator)
      return where + ": only a superoperator (gate type 4) may act on 4 qubits";
    if (gate.data_offset < 0 || gate.data_offset + needed > data_size)
      return where + ": data range [" + Str(m[2]) + ", " +
             Str(gate.data_offset + needed) + ") is outside gate_data of size " +
             Str(data_size);
    p->contributions_begin.push_back(static_cast<int>(p->contributions.size()));
    if (gate.type == kExponential) {
      p->hamiltonian_offset[g] = static_cast<int64_t>(p->hamiltonians.size());
      const int n = blk.dim * blk.dim;
      std::vector<Complex<FP>> h(n, Complex<FP>{0, 0});
      const double* d = gate_data + gate.data_offset;
      const size_t first_phase = p->phases.size();
      struct Sum {
        int entry, value;
        double re, im;
      };
      std::vector<Sum> sums;  // summed in double, stored in FP
      auto add = [&sums](int entry, int value, double re, double im) {
        for (Sum& c : sums)
          if (c.entry == entry && c.value == value) {
            c.re += re;
            c.im += im;
            return;
          }
        sums.push_back({entry, value, re, im});
      };
      for (int t = 0; t < gate.num_terms; ++t, d += 1 + mat) {
        for (int e = 0; e < n; ++e) {
          h[e].re += static_cast<FP>(d[0] * d[1 + 2 * e]);
          h[e].im += static_cast<FP>(d[0] * d[2 + 2 * e]);
        }
        // exp(-i angle eig) = cos(phase) + i sign sin(phase), phase = -angle |eig|.
        const FP eig = static_cast<FP>(d[0]);  // as the simulator reads it
        int phase = -1;
        for (size_t i = first_phase; i < p->phases.size() && phase < 0; ++i)
          if (p->phases[i].eig == std::fabs(eig)) phase = static_cast<int>(i);
        if (eig != 0 && phase < 0) {
          phase = static_cast<int>(p->phases.size());
          p->phases.push_back({gate.angle_slot, std::fabs(eig)});
          p->max_abs_eig = std::max(p->max_abs_eig, static_cast<double>(std::fabs(eig)));
        }
        const double sign = eig < 0 ? -1.0 : 1.0;
        for (int e = 0; e < n; ++e) {
          const double pr = d[1 + 2 * e], pi = d[2 + 2 * e];
          if (pr == 0 && pi == 0) continue;
          if (eig == 0) {
            add(e, 0, pr, pi);
          } else {
            add(e, 1 + 2 * phase, pr, pi);
            add(e, 2 + 2 * phase, -sign * pi, sign * pr);
          }
        }
      }
      // Entries of H = sum eig_t P_t and of U's expansion may overflow FP
      // (or even float64) though every number in gate_data is finite.
      bool finite = true;
      for (const Complex<FP>& e : h) finite &= std::isfinite(e.re) && std::isfinite(e.im);
      for (const Sum& c : sums)
        finite &= std::isfinite(static_cast<FP>(c.re)) && std::isfinite(static_cast<FP>(c.im));
      if (!finite)
        return where + ": the generator sum_t eig_t P_t in gate_data[" +
               Str(gate.data_offset) + ", " + Str(gate.data_offset + needed) +
               ") overflows " + FloatName<FP>();
      for (const Sum& c : sums)
        if (static_cast<FP>(c.re) != 0 || static_cast<FP>(c.im) != 0)
          p->contributions.push_back(
              {c.entry, c.value, static_cast<FP>(c.re), static_cast<FP>(c.im)});
      p->hamiltonians.insert(p->hamiltonians.end(), h.begin(), h.end());
    }
  }
  p->contributions_begin.push_back(static_cast<int>(p->contributions.size()));

  p->num_observables = static_cast<int>(num_observables);
  p->terms_per_observable = static_cast<int>(terms_per_observable);
  // A density program's observables act on its n = num_qubits / 2 physical qubits.
  const int64_t measured_qubits = density ? num_qubits / 2 : num_qubits;
  const uint64_t full = measured_qubits >= 64 ? ~uint64_t{0}
                                              : (uint64_t{1} << measured_qubits) - 1;
  for (int64_t o = 0; o < num_observables; ++o) {
    for (int64_t t = 0; t < terms_per_observable; ++t) {
      const int64_t i = o * terms_per_observable + t;
      const std::string where =
          "pauli_masks[" + Str(o) + ", " + Str(t) + "]";
      const double c = pauli_coeffs[i];
      if (!std::isfinite(static_cast<FP>(c)))
        return "pauli_coeffs[" + Str(o) + ", " + Str(t) + "]" + NotFiniteIn<FP>(c);
      const int64_t xm = pauli_masks[2 * i], zm = pauli_masks[2 * i + 1];
      if (xm < 0 || zm < 0 || (static_cast<uint64_t>(xm) & ~full) ||
          (static_cast<uint64_t>(zm) & ~full))
        return where + ": mask (" + Str(xm) + ", " + Str(zm) +
               ") acts on a qubit outside the " + Str(measured_qubits) +
               (density ? "-qubit physical register (a density program's observables act on "
                          "qubits below num_qubits / 2)"
                        : "-qubit register");
      if (c == 0.0) continue;
      typename Program<FP>::Term term;
      term.observable = static_cast<int>(o);
      term.x_mask = static_cast<uint64_t>(xm);
      term.z_mask = static_cast<uint64_t>(zm);
      term.y_phase = __builtin_popcountll(term.x_mask & term.z_mask) & 3;
      term.coeff = static_cast<FP>(c);
      (term.x_mask == 0 ? p->diagonal_terms : p->offdiagonal_terms)
          .push_back(term);
    }
  }
  p->real_state = true;
  for (const Block& blk : p->blocks)
    if (blk.kind != kRealDense && blk.kind != kRealDiagonal) p->real_state = false;
  // tr(O rho) of a real rho is real whatever the Paulis: only pure states
  // need real terms.
  if (!density)
    for (const auto* terms : {&p->diagonal_terms, &p->offdiagonal_terms})
      for (const auto& term : *terms)
        if (term.y_phase % 2 != 0) p->real_state = false;
  ChooseRestores(gate_data, p);
  return "";
}

}  // namespace qkh

#endif  // QKERAS_HYBRID_SIMULATOR_PROGRAM_H_
