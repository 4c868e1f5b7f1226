"""scripts/second_order.py end to end on a few MiniLM iterations (slow: four searches)."""

from __future__ import annotations

import json
import runpy
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_second_order_script_writes_its_report(tmp_path, shared_data, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["second_order.py", "--train-samples", "32", "--max-length", "32",
                                      "--iterations", "2", "--data-dir", str(shared_data / "glue"),
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(REPO / "scripts" / "second_order.py"), run_name="__main__")
    assert done.value.code == 0
    report = json.loads((tmp_path / "second_order.json").read_text())
    assert [c["preset"] for c in report["comparisons"]] == ["autolora", "autolora_authors"]
    for c in report["comparisons"]:
        assert c["layers"] == 12 and c["second_order_over_direct"]["median"] > 0
        assert c["beta_displacement"] > 0
    eta0 = [s for s in report["searches"] if s["method"].endswith("eta0")]
    assert all(s["second_order_over_direct"] == [] for s in eta0)  # first order: no second-order term
    assert "‖β − β_η0‖" in (tmp_path / "second_order.md").read_text()
