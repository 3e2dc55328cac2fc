// Shared by the op kernels (kernels.cc, measure_kernels.cc): input checks,
// program decoding with a cache, checked output allocation, and the
// parallel run of the simulator over a batch.
#ifndef QKERAS_HYBRID_TF_COMMON_H_
#define QKERAS_HYBRID_TF_COMMON_H_

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <new>
#include <string>
#include <thread>
#include <type_traits>

#include "../simulator/program.h"
#include "../simulator/simulator.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/lib/core/errors.h"
#include "tensorflow/core/platform/blocking_counter.h"
#include "tensorflow/core/platform/mutex.h"
#include "tensorflow/core/platform/threadpool.h"

namespace qkh {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

// From this many qubits on, a small batch is simulated one sample at a time
// with both cores working inside the state vector.
constexpr int kIntraStateQubits = 14;
// Up to this many qubits, kLanes samples share one simulator, interleaved so
// that the kernels vectorize across samples.
constexpr int kLaneQubits = 20;
constexpr int kLanes = 8;
// Up to this many qubits, a batch of at least kWideBatch samples runs
// kWideLanes per simulator: small states spend most of their time in per-block
// work (matrices, dispatch) that twice the lanes share. (Measured, single
// thread, forward+gradient per sample: -32% at 4 qubits, -15% at 12 and 14;
// slower from 16 qubits on, where the state outgrows the caches.)
constexpr int kWideLaneQubits = 14;
constexpr int kWideLanes = 16;
constexpr int64_t kWideBatch = 2 * kWideLanes;

inline double PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * page : 8e9;
}

// "[a,b,c]" like TensorShape::DebugString, for shapes that may not be valid
// TensorShapes: their constructor CHECK-fails (aborts the process) when the
// number of elements overflows int64, e.g. [batch, 2, 2**62].
inline std::string ShapeString(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  for (int64_t d : dims) s += (s.size() > 1 ? "," : "") + std::to_string(d);
  return s + "]";
}

// The index of the first non-finite value of v[0..n), or -1. States are
// large, so blocks are first scanned with an exponent-bits test that
// vectorizes (memory speed; a per-element isfinite with an early exit does
// not); only a block with a hit is searched element by element.
template <typename T>
inline int64_t FirstNonFinite(const T* v, int64_t n) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr Bits kExponent =
      static_cast<Bits>(sizeof(T) == 4 ? 0x7f800000ull : 0x7ff0000000000000ull);
  constexpr int64_t kBlock = 2048;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = std::min(n, begin + kBlock);
    Bits found = 0;
    for (int64_t i = begin; i < end; ++i) {
      Bits x;
      std::memcpy(&x, v + i, sizeof(x));
      found |= static_cast<Bits>((x & kExponent) == kExponent);
    }
    if (found == 0) continue;
    for (int64_t i = begin; i < end; ++i)
      if (!std::isfinite(v[i])) return i;
  }
  return -1;
}

// "[i, j]" of flat index i of a [rows, cols] matrix.
inline std::string Index2(int64_t i, int64_t cols) {
  return "[" + std::to_string(i / cols) + ", " + std::to_string(i % cols) + "]";
}

// "[b, part, x]" of flat index i of a [batch, 2, size] state.
inline std::string StateIndex(int64_t i, int64_t size) {
  return "[" + std::to_string(i / (2 * size)) + ", " + std::to_string(i / size % 2) + ", " +
         std::to_string(i % size) + "]";
}

// Allocates an output of the given shape, or fails cleanly when the shape
// overflows or would not fit in memory (rather than in TF's allocator).
template <typename T>
inline Tensor* AllocateOutput(OpKernelContext* c, int index, const char* name,
                              std::initializer_list<int64_t> dims) {
  TensorShape shape;
  const auto status = TensorShape::BuildTensorShape(dims, &shape);
  if (!status.ok()) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        name, " would have shape ", ShapeString(dims), ": ", status.message()));
    return nullptr;
  }
  if (static_cast<double>(shape.num_elements()) * sizeof(T) > 0.8 * PhysicalMemoryBytes()) {
    c->CtxFailure(__FILE__, __LINE__, errors::ResourceExhausted(
        name, " of shape ", ShapeString(dims), " needs more than this machine's memory"));
    return nullptr;
  }
  Tensor* out = nullptr;
  const auto allocated = c->allocate_output(index, shape, &out);
  if (!allocated.ok()) {
    c->CtxFailure(__FILE__, __LINE__, allocated);
    return nullptr;
  }
  return out;
}

// Fails on a result (name + where, e.g. "expectations[1, 2]") that
// overflowed T although every input was finite.
template <typename T>
inline void FailResultNotFinite(OpKernelContext* c, const std::string& what, T value) {
  c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
      what, " is ", Num(static_cast<double>(value)), ": the computation overflows ",
      FloatName<T>(), "; the inputs (pauli_coeffs, generator eigenvalues in gate_data, "
      "initial_state, upstream) are too large for this precision"));
}

// FailResultNotFinite on the first non-finite value of t, if any; index(i)
// formats flat index i of the output for the message.
template <typename T, typename IndexFn>
inline bool CheckResultFinite(OpKernelContext* c, const Tensor& t, const char* name,
                              IndexFn index) {
  const int64_t i = FirstNonFinite(t.flat<T>().data(), t.NumElements());
  if (i < 0) return true;
  FailResultNotFinite<T>(c, name + index(i), t.flat<T>()(i));
  return false;
}

// FirstNonFinite of v[0..n) split into `chunks` run by `parallel`: the
// threads that share one state vector share its check too.
template <typename T>
inline int64_t FirstNonFiniteIn(const T* v, int64_t n, int chunks,
                                const ParallelChunks& parallel) {
  if (chunks <= 1) return FirstNonFinite(v, n);
  std::vector<int64_t> first(chunks, -1);
  parallel(chunks, [&](int chunk) {
    const int64_t begin = n / chunks * chunk + std::min<int64_t>(chunk, n % chunks);
    const int64_t end = begin + n / chunks + (chunk < n % chunks);
    const int64_t i = FirstNonFinite(v + begin, end - begin);
    first[chunk] = i < 0 ? -1 : begin + i;
  });
  for (int64_t i : first)
    if (i >= 0) return i;
  return -1;
}

// The smallest flat index offered by the threads of one call: where the
// first non-finite value of a state is, checked one sample group at a time
// (right after it was written or before it is read, while it is in cache).
class FirstIndex {
 public:
  void Offer(int64_t i) {
    int64_t current = index_.load();
    while (i < current && !index_.compare_exchange_weak(current, i)) {
    }
  }
  int64_t Get() const {
    const int64_t i = index_.load();
    return i == kNone ? -1 : i;
  }

 private:
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::atomic<int64_t> index_{kNone};
};

// Runs fn(0..n-1): n-1 tasks on the pool and one on the calling thread,
// which then waits. (ParallelFor's cost model kept these coarse tasks on the
// calling thread.)
inline void RunConcurrently(::tsl::thread::ThreadPool* pool, int n,
                            const std::function<void(int)>& fn) {
  if (n <= 1) {
    if (n == 1) fn(0);
    return;
  }
  ::tensorflow::BlockingCounter pending(n - 1);
  for (int i = 1; i < n; ++i)
    pool->Schedule([&fn, &pending, i] {
      fn(i);
      pending.DecrementCount();
    });
  fn(0);
  pending.Wait();
}

// Work shared by the threads of one call: the next group to claim and the
// number finished.
struct ClaimState {
  explicit ClaimState(int64_t units) : units(units) {}
  const int64_t units;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<bool> out_of_memory{false};
  ::tensorflow::mutex mu;
  ::tensorflow::condition_variable finished;

  // Only the last group takes the lock, to wake a waiter.
  void Finish() {
    if (done.fetch_add(1, std::memory_order_acq_rel) + 1 < units) return;
    ::tensorflow::mutex_lock lock(mu);
    finished.notify_all();
  }
  // Waits until all groups are finished: first by polling for up to `spin`
  // (yielding the core, so a thread that needs it gets it), because the
  // groups still running are at most one per thread and waking from a sleep
  // can cost more than they take; then by sleeping.
  void Wait(std::chrono::nanoseconds spin) {
    const auto until = std::chrono::steady_clock::now() + spin;
    while (done.load(std::memory_order_acquire) < units &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    ::tensorflow::mutex_lock lock(mu);
    while (done.load(std::memory_order_acquire) < units) finished.wait(lock);
  }
};

template <typename T>
class ExpectationOpBase : public OpKernel {
 public:
  explicit ExpectationOpBase(OpKernelConstruction* c,
                             ProgramMode mode = ProgramMode::kPure)
      : OpKernel(c), mode_(mode) {}

 protected:
  // Validates the program inputs 0..5 and the angles (input angles_input) and
  // returns the decoded program, or null after setting an error. A program
  // is decoded and validated once and reused while the same program bytes
  // come back (layers feed constants).
  std::shared_ptr<const Program<T>> Prepare(OpKernelContext* c, int angles_input = 6) {
    const Tensor& num_qubits = c->input(0);
    const Tensor& block_meta = c->input(1);
    const Tensor& gate_meta = c->input(2);
    const Tensor& gate_data = c->input(3);
    const Tensor& masks = c->input(4);
    const Tensor& coeffs = c->input(5);
    const Tensor& angles = c->input(angles_input);
    auto fail = [c](const std::string& msg) {
      c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(msg));
      return nullptr;
    };
    if (num_qubits.dims() != 0)
      return fail("num_qubits must be a scalar, got shape " + num_qubits.shape().DebugString());
    const bool density = mode_ == ProgramMode::kDensity;
    if (block_meta.dims() != 2 ||
        (block_meta.dim_size(1) != kBlockMetaWidth &&
         !(density && block_meta.dim_size(1) == kDensityBlockMetaWidth)))
      return fail(std::string("block_meta must have shape [num_blocks, 7]") +
                  (density ? " or [num_blocks, 8]" : "") + ", got " +
                  block_meta.shape().DebugString());
    if (gate_meta.dims() != 2 || gate_meta.dim_size(1) != kGateMetaWidth)
      return fail("gate_meta must have shape [num_gates, 4], got " +
                  gate_meta.shape().DebugString());
    if (gate_data.dims() != 1)
      return fail("gate_data must be a vector, got shape " + gate_data.shape().DebugString());
    if (masks.dims() != 3 || masks.dim_size(2) != 2)
      return fail("pauli_masks must have shape [num_observables, num_terms, 2], got " +
                  masks.shape().DebugString());
    if (coeffs.dims() != 2 || coeffs.dim_size(0) != masks.dim_size(0) ||
        coeffs.dim_size(1) != masks.dim_size(1))
      return fail("pauli_coeffs must have shape " +
                  ShapeString({masks.dim_size(0), masks.dim_size(1)}) +
                  " to match pauli_masks, got " + coeffs.shape().DebugString());
    if (angles.dims() != 2)
      return fail("angles must have shape [batch, num_angles], got " + angles.shape().DebugString());

    const int64_t num_angles = angles.dim_size(1);
    std::shared_ptr<const Program<T>> program;
    {
      ::tensorflow::mutex_lock lock(mu_);
      if (cached_.Matches(c, num_angles)) program = cached_.program;
    }
    if (program == nullptr) {
      auto decoded = std::make_shared<Program<T>>();
      std::string error;
      try {  // a program's tables can outgrow its tensors (gates may share data)
        error = DecodeProgram<T>(
            num_qubits.scalar<int32_t>()(), block_meta.flat<int32_t>().data(),
            block_meta.dim_size(0), gate_meta.flat<int32_t>().data(), gate_meta.dim_size(0),
            gate_data.flat<double>().data(), gate_data.NumElements(),
            masks.flat<int64_t>().data(), coeffs.flat<double>().data(), masks.dim_size(0),
            masks.dim_size(1), num_angles, decoded.get(),
            static_cast<int>(block_meta.dim_size(1)), mode_);
      } catch (const std::bad_alloc&) {
        c->CtxFailure(__FILE__, __LINE__, errors::ResourceExhausted(
            "out of memory decoding a program of ", gate_meta.dim_size(0), " gates"));
        return nullptr;
      }
      if (!error.empty()) return fail(error);
      program = decoded;
      ::tensorflow::mutex_lock lock(mu_);
      cached_.Store(c, num_angles, program);
    }
    // The simulator's phases are -angle * eig in double: bounding |angle|
    // keeps them finite (only float64 angles can come close).
    const double limit =
        std::numeric_limits<double>::max() / std::max(1.0, program->max_abs_eig);
    const T* a = angles.flat<T>().data();
    for (int64_t i = 0; i < angles.NumElements(); ++i)
      if (!(std::fabs(static_cast<double>(a[i])) <= limit)) {
        const double v = static_cast<double>(a[i]);
        const std::string where = "angles" + Index2(i, angles.dim_size(1));
        if (!std::isfinite(v)) return fail(where + " is not finite (" + Num(v) + ")");
        return fail(where + " = " + Num(v) + " times a generator eigenvalue of up to " +
                    Num(program->max_abs_eig) + " (gate_data) overflows float64");
      }
    // A Kraus selection's slot holds the index of the matrix it applies.
    const int64_t rows = angles.dim_size(0);
    for (const auto& selection : program->selections)
      for (int64_t r = 0; r < rows; ++r) {
        const double v = static_cast<double>(a[r * num_angles + selection.slot]);
        if (!(v >= 0 && v < selection.count && v == std::floor(v)))
          return fail("angles" + Index2(r * num_angles + selection.slot, num_angles) + " = " +
                      Num(v) + " selects a Kraus operator of gate_meta[" +
                      Str(selection.gate) + "]: it must be an integer in [0, " +
                      Str(selection.count) + ")");
      }
    for (const auto& jump : program->jumps)
      for (int64_t r = 0; r < rows; ++r) {
        const double v = static_cast<double>(a[r * num_angles + jump.slot]);
        if (!(v >= 0 && v < 1))
          return fail("angles" + Index2(r * num_angles + jump.slot, num_angles) + " = " + Num(v) +
                      " is the uniform draw of the quantum-jump selection gate_meta[" +
                      Str(jump.gate) + "]: it must be in [0, 1)");
      }
    return program;
  }

  // Runs fn(simulator, first_sample, lanes, chunks, parallel) over the batch,
  // choosing the parallelism: small states run kLanes (or kWideLanes)
  // samples per simulator in vectorized lanes; large ones one sample per
  // simulator; a large state with a small batch puts all threads inside one
  // state vector.
  // `adjoint`: fn runs an adjoint pass, which keeps the checkpoints of the
  // program's non-unitary blocks (counted in the memory check) and is
  // refused for quantum-jump selections.
  template <typename Fn>
  void ForEachSample(OpKernelContext* c, const Program<T>& program,
                     int64_t batch, Fn fn, bool adjoint = false) {
    if (adjoint && !program.jumps.empty()) {
      c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
          "the program has quantum-jump selections (gate_meta[", program.jumps[0].gate,
          "] is of type 5), whose choices depend on the state: it has no adjoint gradient. "
          "Differentiate trajectories of Kraus selections (trajectory_primitives(..., jumps=False)) "
          "instead, or use parameter shifts"));
      return;
    }
    if (program.num_qubits <= kWideLaneQubits && batch >= kWideBatch)
      Run<Simulator<T, kWideLanes>>(c, program, batch, fn, adjoint);
    else if (program.num_qubits <= kLaneQubits)
      Run<Simulator<T, kLanes>>(c, program, batch, fn, adjoint);
    else
      Run<Simulator<T, 1>>(c, program, batch, fn, adjoint);
  }

  const ProgramMode mode_;

 private:
  ::tensorflow::mutex mu_;
  // The last program decoded, with the inputs 0..5 it came from: layers
  // feed the same constants every call, compared here without a copy.
  struct CachedProgram {
    TensorShape shapes[6];
    std::string bytes[6];
    int64_t num_angles = -1;
    std::shared_ptr<const Program<T>> program;

    bool Matches(OpKernelContext* c, int64_t angles) const {
      if (program == nullptr || angles != num_angles) return false;
      for (int i = 0; i < 6; ++i)
        if (c->input(i).shape() != shapes[i] || c->input(i).tensor_data() != bytes[i])
          return false;
      return true;
    }
    void Store(OpKernelContext* c, int64_t angles, std::shared_ptr<const Program<T>> p) {
      for (int i = 0; i < 6; ++i) {
        shapes[i] = c->input(i).shape();
        bytes[i].assign(c->input(i).tensor_data().data(), c->input(i).tensor_data().size());
      }
      num_angles = angles;
      program = std::move(p);
    }
  };
  CachedProgram cached_ TF_GUARDED_BY(mu_);

  template <typename Sim, typename Fn>
  void Run(OpKernelContext* c, const Program<T>& program, int64_t batch, Fn fn,
           bool checkpoints) {
    constexpr int W = Sim::kLanes;
    auto* pool = c->device()->tensorflow_cpu_worker_threads()->workers;
    const int threads = std::max(1, pool->NumThreads());
    const int64_t units = batch / W + (batch % W != 0);  // groups of W samples
    const bool intra = program.num_qubits >= kIntraStateQubits && units < 2 * threads;
    const double per_sim = Sim::BytesPerInstance(program, checkpoints);
    const double sims = intra ? 1 : std::min<double>(threads, units);
    if (per_sim * sims > 0.8 * PhysicalMemoryBytes()) {
      const bool density = program.mode == ProgramMode::kDensity;
      const std::string kept =
          checkpoints && program.num_checkpoints > 0
              ? ", and " + std::to_string(program.num_checkpoints) +
                    " checkpoints of the state that the adjoint pass restores non-unitary "
                    "blocks from,"
              : ",";
      c->CtxFailure(__FILE__, __LINE__, errors::ResourceExhausted(
          "simulating " +
          (density ? "a density matrix of " + std::to_string(program.num_qubits / 2) +
                         " qubits (a vector on " + std::to_string(program.num_qubits) + ")"
                   : std::to_string(program.num_qubits) + " qubits") +
          " (" + std::to_string(program.gates.size()) + " gates) needs " +
          Num(per_sim * sims / (1 << 30)) + " GiB of state vectors and gate matrices" + kept +
          " more than this machine's memory allows" +
          (density ? "; simulate trajectories instead" : "")));
      return;
    }
    auto lanes_of = [batch](int64_t u) {
      return static_cast<int>(std::min<int64_t>(W, batch - u * W));
    };
    try {
      if (intra) {
        ParallelChunks parallel = [pool](int num_chunks,
                                         const std::function<void(int)>& f) {
          RunConcurrently(pool, num_chunks, f);
        };
        Sim sim(program);
        for (int64_t u = 0; u < units; ++u)
          fn(&sim, u * W, lanes_of(u), 2 * threads, parallel);
        return;
      }
      // Each thread claims groups until none is left, so the calling thread
      // never waits for a pool thread that wakes late (on a small batch it
      // may do all the work). A thread builds its simulator on its first
      // claim and reuses its buffers for the rest.
      auto claim = [&fn, &program, &lanes_of, units](ClaimState* state) {
        std::unique_ptr<Sim> sim;
        int64_t claimed = 0;
        for (int64_t u; (u = state->next.fetch_add(1)) < units; ++claimed) {
          try {
            if (sim == nullptr) sim = std::make_unique<Sim>(program);
            fn(sim.get(), u * W, lanes_of(u), 1, RunSerially);
          } catch (const std::bad_alloc&) {
            state->out_of_memory = true;
          }
          state->Finish();
        }
        return claimed;
      };
      auto state = std::make_shared<ClaimState>(units);
      const int helpers = static_cast<int>(std::min<int64_t>(threads, units)) - 1;
      for (int i = 0; i < helpers; ++i)
        // A helper that starts after the work is done touches only `state`.
        pool->Schedule([state, claim, units] {
          if (state->next.load() < units) claim(state.get());
        });
      const auto start = std::chrono::steady_clock::now();
      const int64_t claimed = claim(state.get());
      // Poll for about two groups' time (at most 200 us) before sleeping.
      const auto per_group = (std::chrono::steady_clock::now() - start) /
                             std::max<int64_t>(claimed, 1);
      state->Wait(std::min<std::chrono::nanoseconds>(2 * per_group,
                                                     std::chrono::microseconds(200)));
      if (state->out_of_memory) throw std::bad_alloc();
    } catch (const std::bad_alloc&) {
      c->CtxFailure(__FILE__, __LINE__, errors::ResourceExhausted(
          "out of memory simulating " + std::to_string(program.num_qubits) +
          " qubits"));
    }
  }
};

// Fails on value i (flat index) of a state input that is not finite.
template <typename T>
inline void FailStateNotFinite(OpKernelContext* c, const Tensor& state, const char* name,
                               int64_t i) {
  c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
      std::string(name) + StateIndex(i, state.dim_size(2)) + " is not finite (" +
      Num(static_cast<double>(state.flat<T>()(i))) + ")"));
}

// A state input [batch, 2, 2^n] (real parts, imaginary parts): the initial
// state of a from-state op or the final state of a from-final-state op,
// validated against the program and the angles.
// `rows` is the batch, or 0 for a final_state that the forward op did not
// keep (then `note` says so). Without check_values, the caller checks that
// the values are finite (FailStateNotFinite).
template <typename T>
inline bool ValidateState(OpKernelContext* c, const Program<T>& program,
                          const Tensor& state, int64_t rows, const char* name,
                          bool check_values = true, const char* note = "") {
  const int64_t size = int64_t{1} << program.num_qubits;
  if (state.dims() != 3 || state.dim_size(0) != rows || state.dim_size(1) != 2 ||
      state.dim_size(2) != size) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        std::string(name) + " must have shape [batch, 2, 2**num_qubits] = " +
        ShapeString({rows, 2, size}) + note + ", got " + state.shape().DebugString()));
    return false;
  }
  if (!check_values) return true;
  // With elements, 2 * size fits in int64 (the tensor exists).
  const int64_t i = FirstNonFinite(state.flat<T>().data(), state.NumElements());
  if (i >= 0) FailStateNotFinite<T>(c, state, name, i);
  return i < 0;
}

// upstream [batch, num_observables] of a gradient op, finite.
template <typename T>
inline bool ValidateUpstream(OpKernelContext* c, const Tensor& upstream, int64_t batch,
                             int num_obs) {
  if (upstream.dims() != 2 || upstream.dim_size(0) != batch ||
      upstream.dim_size(1) != num_obs) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        "upstream must have shape ", ShapeString({batch, num_obs}),
        " (batch, num_observables), got ", upstream.shape().DebugString()));
    return false;
  }
  const int64_t bad = FirstNonFinite(upstream.flat<T>().data(), upstream.NumElements());
  if (bad >= 0) {
    c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(
        "upstream", Index2(bad, num_obs), " is not finite (",
        Num(static_cast<double>(upstream.flat<T>()(bad))), ")"));
    return false;
  }
  return true;
}

}  // namespace qkh

#endif  // QKERAS_HYBRID_TF_COMMON_H_
