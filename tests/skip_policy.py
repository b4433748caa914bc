"""A pytest plugin (``-p tests.skip_policy`` in pyproject): print how many tests skipped and why, and with
``VQGAN_STRICT_SKIPS=1`` (set by ``scripts/test.sh``, so by CI) fail the run when a test skipped for any reason
other than a missing GPU or a missing ComfyUI checkout. A missing fixture must fail, never skip quietly."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest

ALLOWED = re.compile(r"CUDA|GPU|COMFYUI_DIR", re.IGNORECASE)
_skips: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skips[reason.removeprefix("Skipped: ")] += 1


def _bad() -> list[str]:
    return [r for r in _skips if not ALLOWED.search(r)]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    terminalreporter.write_line(f"skipped tests: {sum(_skips.values())}"
                                + "".join(f"\n  {n} x {r}" for r, n in _skips.most_common()))
    if os.environ.get("VQGAN_STRICT_SKIPS") == "1" and _bad():
        terminalreporter.write_line("FAIL: tests skipped for a reason other than a missing GPU or ComfyUI "
                                    f"checkout: {_bad()}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("VQGAN_STRICT_SKIPS") == "1" and _bad() and exitstatus == 0:
        session.exitstatus = 1
