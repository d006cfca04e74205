"""`make demo`'s exit code and verdict display (trainer/demo.py): a verdict, promoted or rejected, is
exit 0; stopping before the gates judged anything is exit 1."""

from __future__ import annotations

import json
import os
import time

from trainer.demo import exit_code, gate_table, verdict_reached


def full_run(state, symbol="SPY", profile="demo", key="abc123"):
    run = state / "runs" / symbol / key / profile / "full"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"status": "completed"}))
    return run


RESULT = {"id": "min_test_sharpe_positive", "tier": "minimum", "blocking": True, "observed": -0.41,
          "comparison": ">", "threshold_shown": "0", "status": "fail"}


def test_a_rejected_model_is_a_verdict_and_exits_zero(tmp_path):
    started = time.time() - 1
    run = full_run(tmp_path)
    (run / "gate_full.json").write_text(json.dumps({"passed": False, "results": [RESULT]}))
    assert verdict_reached(tmp_path, "SPY", "demo", since=started)
    assert exit_code(1, True) == 0
    assert exit_code(0, True) == 0


def test_no_gate_verdict_is_a_breakage(tmp_path):
    full_run(tmp_path)  # trained (or aborted on collapse) but never judged
    assert not verdict_reached(tmp_path, "SPY", "demo", since=0)
    assert not verdict_reached(tmp_path / "nothing", "SPY", "demo", since=0)
    assert exit_code(1, False) == 1


def test_a_verdict_left_by_an_earlier_invocation_does_not_count(tmp_path):
    run = full_run(tmp_path)
    gate = run / "gate_full.json"
    gate.write_text(json.dumps({"passed": True, "results": []}))
    old = time.time() - 3600
    os.utime(gate, (old, old))
    assert not verdict_reached(tmp_path, "SPY", "demo", since=time.time() - 60)


def test_gate_table_lists_every_gate_with_its_status():
    table = gate_table([RESULT, {**RESULT, "id": "smoke_x", "blocking": False, "observed": None, "status": "missing"}])
    lines = table.splitlines()
    assert len(lines) == 3
    assert "min_test_sharpe_positive" in lines[1] and "-0.41" in lines[1] and lines[1].rstrip().endswith("fail")
    assert "minimum*" in lines[2] and " - " in lines[2] and lines[2].rstrip().endswith("missing")
