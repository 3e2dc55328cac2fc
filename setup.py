"""Builds the C++ simulator op against the installed TensorFlow.

The op must be compiled with the same compiler flags and ABI as the
TensorFlow it is loaded into, which only `tf.sysconfig` knows; so the
extension is compiled by custom_ops/build_op.py with TF's own flags rather
than by setuptools' default compiler settings.
"""

import os
import shutil
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_ops"))
from build_op import BUILD_INFO_NAME, HEADERS, SOURCES, compile_op  # noqa: E402


class BuildTfOp(build_ext):
    def get_ext_filename(self, fullname):
        # A plain `.so` name (no CPython ABI tag): TF loads it, not Python.
        if fullname.split(".")[-1] == "_qkeras_hybrid_ops":
            return os.path.join(*fullname.split(".")) + ".so"
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        compile_op(ext.sources, self.get_ext_fullpath(ext.name))

    def copy_extensions_to_source(self):
        # An editable install copies the library into the source tree. Copied
        # in place, it would truncate the file that running processes have
        # mapped (they crash); replaced, they keep the old one. Its build
        # info (the TF version the loader checks) goes with it.
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            pairs = [(regular_file, inplace_file)]
            info = os.path.join(os.path.dirname(regular_file), BUILD_INFO_NAME)
            if os.path.exists(info):
                pairs.append((info, os.path.join(os.path.dirname(inplace_file), BUILD_INFO_NAME)))
            for src, dst in pairs:
                shutil.copy2(src, dst + ".tmp")
                os.replace(dst + ".tmp", dst)


setup(
    ext_modules=[Extension("qkeras_hybrid.ops._qkeras_hybrid_ops", sources=SOURCES, depends=HEADERS)],
    cmdclass={"build_ext": BuildTfOp},
)
