"""The report draws step-size traces when runs carry them, and its Markdown table reads the scores."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from steepest.bench.report import write_report
from steepest.bench.store import ResultStore
from tests.bench.test_store import fake_result


def test_report_has_step_size_trace_and_summary(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "r.db")
    for seed in (0, 1):
        plain = fake_result(seed)
        store.add(plain)
        searched = fake_result(seed)
        searched.spec = dataclasses.replace(searched.spec, optimizer="sgd")
        for i, point in enumerate(searched.evals):
            point.step_size = 2.0**-i
        searched.grad_evals_to_target = 60  # twice adamw's 30
        store.add(searched)
    report = write_report(store, tmp_path / "rep", unit="grad_evals")
    names = {p.name for p in report.images}
    assert "stepsize_least_squares.png" in names
    page = report.html.read_text()
    for name in re.findall(r'<img src="([^"]+)"', page):
        assert (tmp_path / "rep" / name).is_file()
    summary = report.markdown.read_text()
    assert "| least_squares | adamw | 2/2 | 30 | 30 |" in summary
    assert "| least_squares | sgd | 2/2 | 30 | 60 |" in summary
    # grad_evals scores: adamw ratio 1 -> B = 1; sgd ratio 2 -> B = (4 - 2) / 3
    assert "| adamw | 1.000 |" in summary and "| sgd | 0.667 |" in summary
