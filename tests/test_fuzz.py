"""The raw-op fuzzer (tests/fuzz_ops.py): about two minutes of it, and a
check that it does catch a crash, a hang and a stray exception.

QKH_FUZZ_SECONDS sets the budget (`make fuzz SECONDS=N` runs longer);
failing cases are saved under QKH_FUZZ_REPRO_DIR (default fuzz_repros/).
"""

import os
import pickle

import numpy as np

import fuzz_ops

FUZZ_SECONDS = float(os.environ.get("QKH_FUZZ_SECONDS", "80"))


def test_fuzzing_the_raw_ops_finds_no_crash():
    total = fuzz_ops.run(FUZZ_SECONDS, seed=0, log=print)
    assert not total["failures"], "\n\n".join(
        f"{f['kind']}: {f.get('case')} (repro: {f.get('repro')})\n{f.get('error') or f.get('output', '')[-3000:]}"
        for f in total["failures"])
    assert total["calls"] >= 500, total
    ops, modes, dtypes = zip(*(key.split("/") for key in total["ops"]))
    assert set(ops) == set(fuzz_ops.OPS)
    assert set(modes) == set(fuzz_ops.MODES)
    assert set(dtypes) == {"float32", "float64"}
    # Both valid results and every kind of clean rejection occur.
    assert {"result", "InvalidArgumentError", "TypeError", "ValueError"} <= set(total["outcomes"]), total["outcomes"]


def test_fuzzer_reports_crash_hang_and_stray_exception_with_repros(tmp_path, monkeypatch):
    monkeypatch.setenv(fuzz_ops.INJECT_ENV, "0:2:exception,0:4:abort,1:1:hang")
    # hang_seconds leaves room for a legitimately slow case (tracing a tf.function on a loaded
    # 2-core machine took over 3 s): the injected hang never ends, so it is caught either way.
    total = fuzz_ops.run(300, seed=5, repro_dir=str(tmp_path), hang_seconds=20, max_chunks=2, log=print)
    kinds = sorted(f["kind"] for f in total["failures"])
    assert kinds == ["RuntimeError", "crash-SIGABRT", "hang"], total["failures"]
    assert total["calls"] >= 4
    files = sorted(os.listdir(tmp_path))
    for name in ("exception-RuntimeError-seed5-chunk0-case2", "crash-SIGABRT-seed5-chunk0-case4",
                 "crash-SIGABRT-seed5-chunk0-case3", "hang-seed5-chunk1-case1"):
        assert name + ".pkl" in files and name + ".txt" in files, files
    # A repro is the case itself: regenerating it gives the same inputs.
    with open(tmp_path / "crash-SIGABRT-seed5-chunk0-case4.pkl", "rb") as f:
        saved = pickle.load(f)
    again = fuzz_ops.make_case(fuzz_ops.build_pool(5, 0), 5, 0, 4)
    assert saved["op"] == again["op"] and saved["mutations"] == again["mutations"]
    for (kind_a, a), (kind_b, b) in zip(saved["inputs"], again["inputs"]):
        assert kind_a == kind_b
        if isinstance(a, tuple):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)
