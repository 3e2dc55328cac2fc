"""Compiles the op library with TensorFlow's own flags.

setup.py builds the installed library with `compile_op`; `make sanitize`
runs this file to build an AddressSanitizer + UndefinedBehaviorSanitizer
copy in a separate directory:

    python custom_ops/build_op.py --sanitize --out build/sanitize/_qkeras_hybrid_ops.so
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["custom_ops/tf/ops.cc", "custom_ops/tf/kernels.cc", "custom_ops/tf/measure_ops.cc",
           "custom_ops/tf/measure_kernels.cc", "custom_ops/tf/density_ops.cc",
           "custom_ops/tf/density_kernels.cc"]
HEADERS = ["custom_ops/simulator/program.h", "custom_ops/simulator/simulator.h",
           "custom_ops/simulator/measure.h", "custom_ops/simulator/density.h",
           "custom_ops/tf/common.h", "custom_ops/tf/measure_common.h", "custom_ops/tf/shape_fns.h"]
BUILD_INFO_NAME = "_build_info.json"
# Findings stop the process (-fno-sanitize-recover): a test or fuzz run fails.
SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=all"]


def compile_op(sources, out, sanitize=False, cwd=None):
    """Compiles `sources` into the shared library `out` and writes its
    _build_info.json beside it."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    arch = shlex.split(os.environ.get("QKERAS_HYBRID_ARCH_FLAGS", "-march=native"))
    optimize = SANITIZE_FLAGS if sanitize else ["-O3"]
    cmd = (
        [os.environ.get("CXX", "g++"), "-shared", "-fPIC", *optimize, "-std=c++17", "-Wall"]
        # Lets the kernels vectorize their sums (reassociation); unlike
        # -ffast-math it keeps NaN/inf semantics, which validation needs.
        + ["-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
        + arch
        + tf.sysconfig.get_compile_flags()
        + list(sources)
        + ["-o", out]
        + tf.sysconfig.get_link_flags()
    )
    print(" ".join(cmd), file=sys.stderr)
    subprocess.check_call(cmd, cwd=cwd)
    flags = cmd[1 : cmd.index("-fno-trapping-math") + 1] + arch
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), BUILD_INFO_NAME), "w") as f:
        json.dump({"tensorflow": tf.__version__, "compiler_flags": flags}, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sanitize", action="store_true", help="AddressSanitizer + UBSan, halting on a finding")
    args = parser.parse_args()
    repo = os.path.dirname(HERE)
    compile_op([os.path.join(repo, s) for s in SOURCES], os.path.abspath(args.out), args.sanitize)


if __name__ == "__main__":
    main()
