"""The op benchmark runs end to end on a tiny case (no timing asserted: speed
goals live in the benchmark's own output, not in tests)."""

import json

from conftest import load_example


def test_op_bench_tiny_case_agrees_with_tfq_and_reports_every_timing(tmp_path, capsys):
    out = tmp_path / "bench.json"
    status = load_example("op_bench", folder="benchmarks").main(
        ["--cases", "3:2:16", "--reps", "2", "--block-ms", "2", "--no-layer-path", "--json", str(out)]
    )
    assert status == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["agreement_failure"] is None
    assert result["max_deviation"]["grad"] < 1e-4
    for name in ("tfq_fwd", "ours_fwd", "tfq_grad", "ours_grad"):
        assert len(result["timing"][name]["samples_ms"]) == 2
        assert result["timing"][name]["median_ms"] > 0
        assert result["calls_per_sample"][name] >= 1
    assert result["in_graph"]["ours_grad_ms"] > 0 and result["in_graph"]["tfq_grad_ms"] > 0
    assert "in one graph" in capsys.readouterr().out


def _synthetic_report(fwd_ms, grad_ms, fwd_mb, grad_mb):
    return {
        "samples_ms": {"fwd": fwd_ms, "grad": grad_ms},
        "memory": {"fwd": {"peak_increase_mb": fwd_mb}, "grad": {"peak_increase_mb": grad_mb}},
        "versions": {},
        "first_call_s": {},
    }


def test_peers_bench_flags_disagreement_and_tabulates_ratios_and_memory():
    peers = load_example("peers_bench", folder="benchmarks")
    ours = {"fwd_values": [[0.5, -0.25]], "grad_values": [[0.5, -0.25]], "grad": [[0.1, 0.2, 0.3, 0.4]]}
    close = {k: [[x + 2e-5 for x in row] for row in v] for k, v in ours.items()}
    off = dict(close, grad=[[0.1, 0.2, 0.3, 0.41]])
    dev, failures = peers.check_agreement({"ours": ours, "tc_state": close, "pl": off}, tol=1e-4)
    assert set(dev) == {"tc_state", "pl"} and dev["tc_state"]["grad"] < 1e-4
    assert failures == [("pl", "grad", dev["pl"]["grad"])] and dev["pl"]["grad"] > 9e-3
    # NaN outputs and shape mismatches are failures, not passes.
    nan = dict(close, fwd_values=[[float("nan"), 0.0]], grad=[[0.1]])
    _, failures = peers.check_agreement({"ours": ours, "tfq": nan}, tol=1e-4)
    assert {(lib, key) for lib, key, _ in failures} == {("tfq", "fwd_values"), ("tfq", "grad")}
    # Against a float64 reference every library is checked, ours included.
    exact = dict(ours, fwd_values=[[0.5, -0.2]])
    dev, failures = peers.check_agreement({"ours": ours, "tc_state": close}, tol=1e-4, exact=exact)
    assert set(dev) == {"ours", "tc_state"}
    assert {(lib, key) for lib, key, _ in failures} == {("ours", "fwd_values"), ("tc_state", "fwd_values")}
    assert peers.tolerance(10, 1e-4) == 1e-4 and peers.tolerance(20, 1e-4) == 8e-4

    # n=16, B=64: a batch of complex64 states is 32 MB.
    runs_ours = [_synthetic_report([10.0, 30.0], [20.0], 4.0, 8.0), _synthetic_report([20.0], [40.0, 60.0], 5.0, 6.0)]
    runs_tc = [_synthetic_report([40.0, 40.0, 50.0], [120.0], 60.0, 160.0)]
    merged_ours = peers.merge_runs(runs_ours)
    assert merged_ours["median_ms"] == {"fwd": 20.0, "grad": 40.0}
    assert merged_ours["memory_mb"] == {"fwd": 5.0, "grad": 8.0}
    results = {"n=16 L=5 B=64": {
        "case": (16, 5, 64),
        "libs": {"ours": merged_ours, "tc_state": peers.merge_runs(runs_tc)},
        "failures": [("tc_state", "grad", 1.0)],
    }}
    rows = peers.table_rows(results, ["ours", "tc_state"])
    header = peers.TABLE_HEADER
    tc_row = dict(zip(header[:2] + ["fwd", "fwd ratio", "grad", "grad ratio"] + header[6:], rows[1]))
    assert tc_row["fwd"] == "40.00" and tc_row["fwd ratio"] == "2.00x"
    assert tc_row["grad"] == "120.0" and tc_row["grad ratio"] == "3.00x"
    assert tc_row["grad/fwd"] == "3.0" and tc_row["fwd+grad MB"] == "160" and tc_row["states/sample"] == "5.0"
    assert tc_row[""] == "DISAGREE" and rows[0][-1] == ""
    table = peers.format_table(rows)
    assert "tc-ng one state" in table and "3.00x" in table
    assert "goal >= 1.5x: PASS" in peers.goal_lines(results)[0]


def test_peers_bench_runs_ours_and_tfq_workers_on_a_tiny_case(tmp_path, capsys):
    import sys

    out = tmp_path / "peers.json"
    status = load_example("peers_bench", folder="benchmarks").main(
        ["--cases", "3:2:16", "--libs", "ours,tfq", "--quick", "--block-ms", "1",
         "--venv", sys.prefix, "--json", str(out)]
    )
    assert status == 0
    (result,) = json.loads(out.read_text())["results"].values()
    assert result["failures"] == [] and result["errors"] == {}
    assert result["compared_with"] == "ours in float64"
    assert 1e-8 < result["deviation"]["tfq"]["grad"] < 1e-4  # compared, and close
    assert result["deviation"]["ours"]["grad"] < 1e-5
    for lib in ("ours", "tfq"):
        merged = result["libs"][lib]
        assert merged["median_ms"]["fwd"] > 0 and merged["median_ms"]["grad"] > 0
        assert merged["memory_mb"]["grad"] >= 0
    printed = capsys.readouterr().out
    assert "TFQ adjoint" in printed and "fwd+grad MB" in printed
