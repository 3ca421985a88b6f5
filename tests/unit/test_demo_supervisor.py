"""The demo's worker is supervised: a killed worker comes back, with a line on the console."""

from __future__ import annotations

import os
import signal
import sys
import time

from clinic_eval.demo.supervisor import Supervised


def test_a_killed_child_is_restarted_with_a_line_and_stop_ends_it() -> None:
    said: list[str] = []
    supervised = Supervised(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=dict(os.environ),
        name="worker",
        say=said.append,
        poll_seconds=0.05,
    ).start()
    first = supervised.process
    try:
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while supervised.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert supervised.restarts == 1
        assert supervised.process.pid != first.pid and supervised.process.poll() is None
        assert said == [f"The demo's worker stopped (exit code {-signal.SIGKILL}); restarting it."]
    finally:
        supervised.stop()
    assert supervised.process.poll() is not None, "stopping ends the child"
    time.sleep(0.2)
    assert supervised.restarts == 1, "a child stopped on purpose is not restarted"
