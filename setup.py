"""Builds the C++ simulator op against the installed TensorFlow.

The op must be compiled with the same compiler flags and ABI as the
TensorFlow it is loaded into, which only `tf.sysconfig` knows; so the
extension is compiled here with TF's own flags rather than by setuptools'
default compiler settings.
"""

import json
import os
import shlex
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = ["custom_ops/tf/ops.cc", "custom_ops/tf/kernels.cc"]
HEADERS = ["custom_ops/simulator/program.h", "custom_ops/simulator/simulator.h"]


class BuildTfOp(build_ext):
    def get_ext_filename(self, fullname):
        # A plain `.so` name (no CPython ABI tag): TF loads it, not Python.
        if fullname.split(".")[-1] == "_qkeras_hybrid_ops":
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        import tensorflow as tf

        out = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        arch = shlex.split(os.environ.get("QKERAS_HYBRID_ARCH_FLAGS", "-march=native"))
        cmd = (
            [os.environ.get("CXX", "g++"), "-shared", "-fPIC", "-O3", "-std=c++17", "-Wall"]
            # Lets the kernels vectorize their sums (reassociation); unlike
            # -ffast-math it keeps NaN/inf semantics, which validation needs.
            + ["-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
            + arch
            + tf.sysconfig.get_compile_flags()
            + ext.sources
            + ["-o", out]
            + tf.sysconfig.get_link_flags()
        )
        print(" ".join(cmd), file=sys.stderr)
        subprocess.check_call(cmd)
        with open(os.path.join(os.path.dirname(out), "_build_info.json"), "w") as f:
            json.dump({"tensorflow": tf.__version__, "compiler_flags": cmd[1:11] + arch}, f)


setup(
    ext_modules=[Extension("qkeras_hybrid.ops._qkeras_hybrid_ops", sources=SOURCES, depends=HEADERS)],
    cmdclass={"build_ext": BuildTfOp},
)
