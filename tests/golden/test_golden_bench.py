"""The golden throughput script runs end to end on a small tensor and rejects bad options."""
import json

import pytest

from bench import golden_throughput


def test_golden_throughput_writes_every_rate(tmp_path, capsys):
    out = tmp_path / "rates.json"
    assert golden_throughput.main(["--rows", "8", "--cols", "64", "--repeats", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    names = [r["name"] for r in figures["rates"]]
    assert figures["shape"] == [8, 64]
    assert any(n.startswith("MXFP4") for n in names) and "bd two-stage quantize" in names
    assert all(r["seconds"] > 0 and r["elements_per_second"] > 0 for r in figures["rates"])
    assert "time / MXFP4" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--cols", "48"], ["--rows", "0"], ["--repeats", "0"]])
def test_golden_throughput_rejects_bad_options(argv):
    with pytest.raises(SystemExit) as err:
        golden_throughput.main(argv)
    assert err.value.code == 2
