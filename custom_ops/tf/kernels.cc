// OpKernels: validate the inputs, decode the program once per call, and run
// the simulator over the batch on TF's CPU thread pool.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <new>
#include <string>

#include "../simulator/program.h"
#include "../simulator/simulator.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/lib/core/errors.h"
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

static double PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * page : 8e9;
}

template <typename T>
class ExpectationOpBase : public OpKernel {
 public:
  explicit ExpectationOpBase(OpKernelConstruction* c) : OpKernel(c) {}

 protected:
  // Validates inputs 0..6 and decodes the program; false if it set an error.
  bool Prepare(OpKernelContext* c, Program<T>* program) {
    const Tensor& num_qubits = c->input(0);
    const Tensor& block_meta = c->input(1);
    const Tensor& gate_meta = c->input(2);
    const Tensor& gate_data = c->input(3);
    const Tensor& masks = c->input(4);
    const Tensor& coeffs = c->input(5);
    const Tensor& angles = c->input(6);
    auto require = [&](bool ok, const std::string& msg) {
      if (!ok) c->CtxFailure(__FILE__, __LINE__, errors::InvalidArgument(msg));
      return ok;
    };
    if (!require(num_qubits.dims() == 0,
                 "num_qubits must be a scalar, got shape " +
                     num_qubits.shape().DebugString()) ||
        !require(block_meta.dims() == 2 && block_meta.dim_size(1) == kBlockMetaWidth,
                 "block_meta must have shape [num_blocks, 7], got " +
                     block_meta.shape().DebugString()) ||
        !require(gate_meta.dims() == 2 && gate_meta.dim_size(1) == kGateMetaWidth,
                 "gate_meta must have shape [num_gates, 4], got " +
                     gate_meta.shape().DebugString()) ||
        !require(gate_data.dims() == 1, "gate_data must be a vector, got shape " +
                                            gate_data.shape().DebugString()) ||
        !require(masks.dims() == 3 && masks.dim_size(2) == 2,
                 "pauli_masks must have shape [num_observables, num_terms, 2], got " +
                     masks.shape().DebugString()) ||
        !require(coeffs.dims() == 2 && coeffs.dim_size(0) == masks.dim_size(0) &&
                     coeffs.dim_size(1) == masks.dim_size(1),
                 "pauli_coeffs must have shape " +
                     TensorShape({masks.dim_size(0), masks.dim_size(1)}).DebugString() +
                     " to match pauli_masks, got " + coeffs.shape().DebugString()) ||
        !require(angles.dims() == 2, "angles must have shape [batch, num_angles], got " +
                                         angles.shape().DebugString())) {
      return false;
    }
    const int n = num_qubits.scalar<int32_t>()();
    const std::string error = DecodeProgram<T>(
        n, block_meta.flat<int32_t>().data(), block_meta.dim_size(0),
        gate_meta.flat<int32_t>().data(), gate_meta.dim_size(0),
        gate_data.flat<double>().data(), gate_data.NumElements(),
        masks.flat<int64_t>().data(), coeffs.flat<double>().data(),
        masks.dim_size(0), masks.dim_size(1), angles.dim_size(1), program);
    if (!require(error.empty(), error)) return false;
    const auto a = angles.matrix<T>();
    for (int64_t b = 0; b < angles.dim_size(0); ++b)
      for (int64_t i = 0; i < angles.dim_size(1); ++i)
        if (!std::isfinite(static_cast<double>(a(b, i))))
          return require(false, "angles[" + std::to_string(b) + ", " +
                                    std::to_string(i) + "] is not finite (" +
                                    std::to_string(static_cast<double>(a(b, i))) + ")");
    return true;
  }

  // Runs fn(simulator, first_sample, lanes, chunks, parallel) over the batch,
  // choosing the parallelism: small states run kLanes samples per simulator
  // in vectorized lanes; large ones one sample per simulator; a large state
  // with a small batch puts all threads inside one state vector.
  template <typename Fn>
  void ForEachSample(OpKernelContext* c, const Program<T>& program,
                     int64_t batch, Fn fn) {
    if (program.num_qubits <= kLaneQubits)
      Run<Simulator<T, kLanes>>(c, program, batch, fn);
    else
      Run<Simulator<T, 1>>(c, program, batch, fn);
  }

 private:
  template <typename Sim, typename Fn>
  void Run(OpKernelContext* c, const Program<T>& program, int64_t batch, Fn fn) {
    constexpr int W = Sim::kLanes;
    auto* pool = c->device()->tensorflow_cpu_worker_threads()->workers;
    const int threads = std::max(1, pool->NumThreads());
    const int64_t units = (batch + W - 1) / W;  // groups of W samples
    const bool intra = program.num_qubits >= kIntraStateQubits && units < 2 * threads;
    const double per_sim = Sim::BytesPerInstance(program.num_qubits);
    const double sims = intra ? 1 : std::min<double>(threads, units);
    if (per_sim * sims > 0.8 * PhysicalMemoryBytes()) {
      c->CtxFailure(__FILE__, __LINE__, errors::ResourceExhausted(
          "a state vector of " + std::to_string(program.num_qubits) +
          " qubits needs " + std::to_string(per_sim * sims / (1 << 30)) +
          " GiB, more than this machine's memory allows"));
      return;
    }
    auto lanes_of = [batch](int64_t u) {
      return static_cast<int>(std::min<int64_t>(W, batch - u * W));
    };
    try {
      if (intra) {
        ParallelChunks parallel = [pool](int num_chunks,
                                         const std::function<void(int)>& f) {
          pool->ParallelFor(num_chunks, int64_t{1} << 40,
                            [&f](int64_t s, int64_t e) {
                              for (int64_t i = s; i < e; ++i) f(static_cast<int>(i));
                            });
        };
        Sim sim(program);
        for (int64_t u = 0; u < units; ++u)
          fn(&sim, u * W, lanes_of(u), 2 * threads, parallel);
        return;
      }
      // Cost of one unit in rough cycles: every block touches each
      // amplitude of each lane about dim times, forward and back.
      double cost = 0;
      for (const Block& blk : program.blocks) cost += 8.0 * blk.dim;
      cost = cost * W * std::ldexp(1.0, program.num_qubits) + 1000.0;
      pool->ParallelFor(units, static_cast<int64_t>(std::min(cost, 1e12)),
                        [&](int64_t start, int64_t end) {
                          Sim sim(program);  // buffers reused across the shard
                          for (int64_t u = start; u < end; ++u)
                            fn(&sim, u * W, lanes_of(u), 1, RunSerially);
                        });
    } catch (const std::bad_alloc&) {
      c->CtxFailure(__FILE__, __LINE__, errors::ResourceExhausted(
          "out of memory simulating " + std::to_string(program.num_qubits) +
          " qubits"));
    }
  }
};

template <typename T>
class ExpectationOp : public ExpectationOpBase<T> {
 public:
  explicit ExpectationOp(OpKernelConstruction* c) : ExpectationOpBase<T>(c) {}

  void Compute(OpKernelContext* c) override {
    Program<T> program;
    if (!this->Prepare(c, &program)) return;
    const Tensor& angles = c->input(6);
    const int64_t batch = angles.dim_size(0);
    const int64_t num_angles = angles.dim_size(1);
    const int num_obs = program.num_observables;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, TensorShape({batch, num_obs}), &out));
    const T* a = angles.flat<T>().data();
    T* e = out->flat<T>().data();
    this->ForEachSample(c, program, batch,
                        [&](auto* sim, int64_t b, int lanes, int chunks,
                            const ParallelChunks& parallel) {
                          sim->Expectations(a + b * num_angles, num_angles, lanes,
                                            e + b * num_obs, chunks, parallel);
                        });
  }
};

template <typename T>
class ExpectationAdjointGradOp : public ExpectationOpBase<T> {
 public:
  explicit ExpectationAdjointGradOp(OpKernelConstruction* c)
      : ExpectationOpBase<T>(c) {}

  void Compute(OpKernelContext* c) override {
    Program<T> program;
    if (!this->Prepare(c, &program)) return;
    const Tensor& angles = c->input(6);
    const Tensor& upstream = c->input(7);
    const int64_t batch = angles.dim_size(0);
    const int64_t num_angles = angles.dim_size(1);
    const int num_obs = program.num_observables;
    OP_REQUIRES(c, upstream.dims() == 2 && upstream.dim_size(0) == batch &&
                       upstream.dim_size(1) == num_obs,
                errors::InvalidArgument(
                    "upstream must have shape ",
                    TensorShape({batch, num_obs}).DebugString(), ", got ",
                    upstream.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(c, c->allocate_output(0, angles.shape(), &out));
    const T* a = angles.flat<T>().data();
    const T* u = upstream.flat<T>().data();
    T* d = out->flat<T>().data();
    this->ForEachSample(c, program, batch,
                        [&](auto* sim, int64_t b, int lanes, int chunks,
                            const ParallelChunks& parallel) {
                          thread_local std::vector<double> grad;
                          grad.assign(lanes * num_angles, 0.0);
                          sim->Gradient(a + b * num_angles, num_angles, lanes,
                                        u + b * num_obs, grad.data(), chunks, parallel);
                          for (int64_t i = 0; i < lanes * num_angles; ++i)
                            d[b * num_angles + i] = static_cast<T>(grad[i]);
                        });
  }
};

#define REGISTER(T)                                                     \
  REGISTER_KERNEL_BUILDER(Name("QkerasHybrid>Expectation")              \
                              .Device(DEVICE_CPU)                       \
                              .TypeConstraint<T>("T"),                  \
                          ExpectationOp<T>);                            \
  REGISTER_KERNEL_BUILDER(Name("QkerasHybrid>ExpectationAdjointGrad")   \
                              .Device(DEVICE_CPU)                       \
                              .TypeConstraint<T>("T"),                  \
                          ExpectationAdjointGradOp<T>);
REGISTER(float)
REGISTER(double)
#undef REGISTER

}  // namespace qkh
