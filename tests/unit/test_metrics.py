"""The agent's phase clock: wall-clock time between marks goes to the phase named at each mark."""

from __future__ import annotations

import pytest

from nurture.streams import metrics as metrics_module
from nurture.streams.metrics import Metrics, PhaseClock


def seconds(metrics: Metrics, phase: str) -> float:
    value = metrics.registry.get_sample_value("nurture_agent_seconds_total", {"phase": phase})
    assert value is not None, f"no sample for phase {phase!r}"
    return value


def test_marks_split_time_between_phases(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(metrics_module.time, "perf_counter", lambda: now[0])
    metrics = Metrics()
    phases = PhaseClock(metrics)

    now[0] = 100.25
    phases.mark("records")
    phases.mark("commit")
    now[0] = 101.0
    phases.mark("handle")
    now[0] = 101.5
    phases.mark("handle")

    assert seconds(metrics, "records") == pytest.approx(0.25)
    assert seconds(metrics, "commit") == 0.0
    assert seconds(metrics, "handle") == pytest.approx(1.25)
    assert seconds(metrics, "settle") == 0.0
    assert b'nurture_agent_seconds_total{phase="handle"} 1.25' in metrics.render()


def test_unknown_phase_is_rejected() -> None:
    with pytest.raises(KeyError):
        PhaseClock(Metrics()).mark("sleep")
