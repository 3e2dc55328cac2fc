"""Lazy loader of the compiled op library, with errors that say what to do."""

import json
import os
import threading

import tensorflow as tf

LIBRARY_NAME = "_qkeras_hybrid_ops.so"
BUILD_INFO_NAME = "_build_info.json"
# Loads another build of the op instead of the installed one (`make sanitize`
# points it at an AddressSanitizer build).
LIBRARY_ENV = "QKERAS_HYBRID_OP_LIBRARY"
_HERE = os.path.dirname(os.path.abspath(__file__))
_REBUILD = (
    "Rebuild it against the TensorFlow you run: from the qkeras_hybrid source "
    "tree run `make build` (or `pip install --no-build-isolation .`)."
)

_lock = threading.Lock()
_library = None


class OpLibraryError(ImportError):
    """The compiled simulator op is missing or does not match TensorFlow."""


def library_path():
    return os.environ.get(LIBRARY_ENV) or os.path.join(_HERE, LIBRARY_NAME)


def load():
    """Returns the loaded op module, loading it on first use."""
    global _library
    if _library is not None:
        return _library
    with _lock:
        if _library is None:
            _library = _load()
    return _library


def _load():
    path = library_path()
    if os.environ.get(LIBRARY_ENV) and not os.path.exists(path):
        raise OpLibraryError(f"{LIBRARY_ENV} names {path}, which does not exist.")
    if not os.path.exists(path):
        raise OpLibraryError(
            f"qkeras_hybrid's compiled simulator op is missing ({path}). "
            "The package was installed without building its C++ op. " + _REBUILD
        )
    info_path = os.path.join(os.path.dirname(path), BUILD_INFO_NAME)
    if os.path.exists(info_path):
        with open(info_path) as f:
            built_for = json.load(f).get("tensorflow")
        if built_for and built_for != tf.__version__:
            raise OpLibraryError(
                f"qkeras_hybrid's op was built for TensorFlow {built_for} but "
                f"TensorFlow {tf.__version__} is installed. " + _REBUILD
            )
    try:
        return tf.load_op_library(path)
    except tf.errors.NotFoundError as e:
        raise OpLibraryError(
            f"Could not load {path} into TensorFlow {tf.__version__} "
            f"(an ABI mismatch: {e}). " + _REBUILD
        ) from e
