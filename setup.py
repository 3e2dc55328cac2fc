"""Builds the C++ simulator op against the installed TensorFlow.

The op must be compiled with the same compiler flags and ABI as the
TensorFlow it is loaded into, which only `tf.sysconfig` knows; so the
extension is compiled by custom_ops/build_op.py with TF's own flags rather
than by setuptools' default compiler settings.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_ops"))
from build_op import HEADERS, SOURCES, compile_op  # noqa: E402


class BuildTfOp(build_ext):
    def get_ext_filename(self, fullname):
        # A plain `.so` name (no CPython ABI tag): TF loads it, not Python.
        if fullname.split(".")[-1] == "_qkeras_hybrid_ops":
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        compile_op(ext.sources, self.get_ext_fullpath(ext.name))


setup(
    ext_modules=[Extension("qkeras_hybrid.ops._qkeras_hybrid_ops", sources=SOURCES, depends=HEADERS)],
    cmdclass={"build_ext": BuildTfOp},
)
