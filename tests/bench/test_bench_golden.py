"""The golden throughput script runs end to end on small tensors, reports every rate, the linear
comparison and the targets with their ratios, and rejects bad options; bench.bench writes them."""
import json

import pytest

from bench import bench, golden_throughput

SMALL = ["--rows", "8", "--cols", "64", "--repeats", "1", "--linear-rows", "4", "--linear-out", "8"]


def test_golden_throughput_writes_every_rate(tmp_path, capsys):
    out = tmp_path / "rates.json"
    assert golden_throughput.main(SMALL + ["--reference", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    names = [r["name"] for r in figures["rates"]]
    assert figures["shape"] == [8, 64] and figures["linear_shape"] == [4, 64, 8] and figures["threads"] == 1
    assert {"bd two-stage quantize", "bd two-stage-trunc quantize", "bd MSE quantize", "bd dequantize",
            golden_throughput.GOLDEN_MXFP4_NAME, "bd MSE quantize (eager reference)"} <= set(names)
    linear = {r["name"]: r for r in figures["linear"]}
    assert {golden_throughput.LINEAR_NAME, golden_throughput.LINEAR_BASE_NAME,
            f"{golden_throughput.LINEAR_NAME} (eager reference)"} <= set(linear)
    assert all(r["seconds"] > 0 and r["elements_per_second"] > 0 for r in figures["rates"] + figures["linear"])
    targets = {t["name"]: t for t in figures["targets"]}
    assert {golden_throughput.LINEAR_NAME, *golden_throughput.ACCUMULATE_NAMES.values()} <= set(targets)
    if golden_throughput.TORCHAO_NAME in names:
        assert set(targets) == set(golden_throughput.TARGETS)
    for t in targets.values():
        assert t["ratio"] > 0 and t["met"] == (t["ratio"] >= t["target"] if t["kind"] == "rate"
                                               else t["ratio"] <= t["target"])
    assert figures["first_call"]["build_cold_seconds"] > 0
    text = capsys.readouterr().out
    assert "Targets:" in text and "rate / torchao MXFP4" in text


@pytest.mark.parametrize("argv", [["--cols", "48"], ["--rows", "0"], ["--repeats", "0"], ["--threads", "0"],
                                  ["--linear-out", "0"]])
def test_golden_throughput_rejects_bad_options(argv):
    with pytest.raises(SystemExit) as err:
        golden_throughput.main(argv)
    assert err.value.code == 2


def test_bench_report_holds_the_golden_tables(tmp_path):
    golden = golden_throughput.measure(8, 64, 1, 0, 1, 4, 8)
    result = {"meta": {"shape": [8, 64], "repeats": 1, "torch_threads": 1, "torch": "x", "machine": "m",
                       "python": "3", "blocks": [32], "wall_seconds": 1.0},
              "golden": golden, "verilator": []}
    text = bench.write_report(tmp_path, result)
    assert "| bd two-stage quantize |" in text and "Targets:" in text and "cold build" in text
    assert json.loads((tmp_path / "report.json").read_text())["golden"]["targets"] == golden["targets"]
