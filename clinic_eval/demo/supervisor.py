"""The demo's embedded worker, kept running: restarted, with a line on the console, if it dies."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence


class Supervised:
    """A child process restarted whenever it exits, until ``stop`` is called."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        name: str,
        say: Callable[[str], None],
        poll_seconds: float = 1.0,
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.name = name
        self.say = say
        self.poll_seconds = poll_seconds
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name=f"supervise {name}", daemon=True)
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(self.command, env=self.env)

    def start(self) -> Supervised:
        self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            code = self.process.poll()
            if code is None or self._stopping.is_set():
                continue
            self.say(f"The demo's {self.name} stopped (exit code {code}); restarting it.")
            self.process = self._spawn()
            self.restarts += 1

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
