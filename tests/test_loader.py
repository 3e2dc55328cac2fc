"""The op library loader explains a missing or mismatched build (without
touching the real, already loaded library)."""

import json

import pytest
import tensorflow as tf

from qkeras_hybrid.ops import _loader


def test_missing_library_says_make_build(monkeypatch, tmp_path):
    monkeypatch.setattr(_loader, "_HERE", str(tmp_path))
    assert _loader.library_path() == str(tmp_path / _loader.LIBRARY_NAME)
    with pytest.raises(_loader.OpLibraryError) as info:
        _loader._load()
    message = str(info.value)
    assert "make build" in message
    assert "missing" in message
    assert str(tmp_path / _loader.LIBRARY_NAME) in message


def test_tensorflow_version_mismatch_is_named(monkeypatch, tmp_path):
    (tmp_path / _loader.LIBRARY_NAME).write_bytes(b"not really a library")
    (tmp_path / _loader.BUILD_INFO_NAME).write_text(json.dumps({"tensorflow": "2.0.0-other"}))
    monkeypatch.setattr(_loader, "_HERE", str(tmp_path))
    with pytest.raises(_loader.OpLibraryError) as info:
        _loader._load()
    message = str(info.value)
    assert "2.0.0-other" in message
    assert tf.__version__ in message
    assert "make build" in message


def test_unloadable_library_is_reported_as_op_library_error(monkeypatch, tmp_path):
    """A .so that cannot be dlopen-ed (ABI mismatch, corrupt file) gets the same advice."""
    (tmp_path / _loader.LIBRARY_NAME).write_bytes(b"\x7fELF but not really")
    (tmp_path / _loader.BUILD_INFO_NAME).write_text(json.dumps({"tensorflow": tf.__version__}))
    monkeypatch.setattr(_loader, "_HERE", str(tmp_path))
    with pytest.raises(_loader.OpLibraryError) as info:
        _loader._load()
    assert "make build" in str(info.value)


def test_error_is_an_import_error():
    assert issubclass(_loader.OpLibraryError, ImportError)


def test_missing_library_does_not_poison_the_cached_library(monkeypatch, tmp_path):
    """load() keeps returning the real library; a failed _load() does not reset it."""
    real = _loader.load()
    monkeypatch.setattr(_loader, "_HERE", str(tmp_path))
    with pytest.raises(_loader.OpLibraryError):
        _loader._load()
    assert _loader.load() is real
    monkeypatch.undo()
    assert _loader.load() is real
    assert hasattr(real, "qkeras_hybrid_expectation")
    assert hasattr(real, "qkeras_hybrid_expectation_adjoint_grad")


def test_fresh_load_with_missing_library_raises_from_load(monkeypatch, tmp_path):
    """With no cached library, the public load() raises the same error (the cache is restored after)."""
    monkeypatch.setattr(_loader, "_library", None)
    monkeypatch.setattr(_loader, "_HERE", str(tmp_path))
    with pytest.raises(_loader.OpLibraryError, match="make build"):
        _loader.load()
    assert _loader._library is None  # a failure is not cached
