"""This machine's memory bandwidth, STREAM-like, with numpy (float32 arrays).

  copy:     b[:] = a            read 1 + write 1 array
  scale:    a *= s (in place)   read 1 + write 1 array: the pattern of one
                                simulator pass over a state vector
  add:      c[:] = a + b        read 2 + write 1 (STREAM's add / triad traffic)

Bytes are counted as STREAM does (reads + writes, not the write-allocate
reads). Each kernel runs on 1 thread and on 2 threads at once (numpy's
ufuncs release the GIL), each thread on its own arrays of the given size.
Reported: best and median GB/s (1e9 bytes) over the repetitions.

Usage: python benchmarks/peers/membw.py [--sizes-mb 2,32,256,1024] [--reps 7]
"""

import argparse
import statistics
import threading
import time

import numpy as np

KERNELS = {
    "copy": (2, lambda a, b, c: np.copyto(b, a)),
    "scale": (2, lambda a, b, c: np.multiply(a, np.float32(1.0000001), out=a)),
    "add": (3, lambda a, b, c: np.add(a, b, out=c)),
}


def run(kernel, size_mb, threads, reps):
    arrays_per, fn = KERNELS[kernel]
    n = int(size_mb * 2**20 // 4)
    sets = [[np.ones(n, np.float32) for _ in range(3)] for _ in range(threads)]
    # Small arrays: the kernel repeats inside the thread, so that a sample is
    # not mostly thread start-up.
    inner = max(1, int(256 // size_mb))
    rates = []
    for _ in range(reps):
        barrier = threading.Barrier(threads + 1)

        def work(arrays):
            barrier.wait()
            for _ in range(inner):
                fn(*arrays)

        workers = [threading.Thread(target=work, args=(s,)) for s in sets]
        for w in workers:
            w.start()
        barrier.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        dt = time.perf_counter() - t0
        rates.append(threads * inner * arrays_per * n * 4 / dt / 1e9)
    return max(rates), statistics.median(rates)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mb", default="2,32,256,1024", help="array sizes (MB) per thread")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args(argv)
    sizes = [float(s) for s in args.sizes_mb.split(",")]
    print(f"{'kernel':6s} {'MB/array':>9s} {'threads':>7s} {'best GB/s':>10s} {'median GB/s':>12s}")
    results = []
    for size in sizes:
        for kernel in KERNELS:
            for threads in (1, 2):
                best, med = run(kernel, size, threads, args.reps)
                results.append((kernel, size, threads, best, med))
                print(f"{kernel:6s} {size:9g} {threads:7d} {best:10.1f} {med:12.1f}", flush=True)
    return results


if __name__ == "__main__":
    main()
