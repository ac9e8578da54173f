"""Trigger: run the executable scripts in Trigger/ after each client run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from bcfg2.plugin import ClientRunHooks, Plugin, executables

if TYPE_CHECKING:
    from bcfg2.metadata import ClientMetadata

#: editor leftovers and hidden files, never run
#: hidden, backup and editor files (the whole name must match)


class Trigger(Plugin, ClientRunHooks):
    """Runs each script as ``script HOST -p PROFILE -g GROUP1:GROUP2:...``.

    Scripts run in background threads, never through a shell, so the
    response to the client is not delayed. Output and failures are logged;
    a script still running after ``timeout`` seconds is killed together
    with the processes it started.
    """

    #: seconds a script may run before it is killed
    timeout: float = 60.0

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._procs: set[subprocess.Popen[bytes]] = set()

    def scripts(self) -> list[str]:
        """The executable files in Trigger/, sorted by name."""
        return executables(self.data, self.logger)

    @staticmethod
    def arguments(metadata: ClientMetadata) -> list[str]:
        """The arguments every script gets for this client."""
        return [metadata.hostname, "-p", metadata.profile or "",
                "-g", ":".join(sorted(metadata.groups))]

    def end_client_run(self, metadata: ClientMetadata) -> None:
        """Start every script in the background and return at once."""
        if not self.running:
            return
        args = self.arguments(metadata)
        for script in self.scripts():
            thread = threading.Thread(target=self._run, args=([script, *args],),
                                      name=f"Trigger-{os.path.basename(script)}", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _run(self, command: list[str]) -> None:
        try:
            self._execute(command)
        except Exception:
            self.logger.exception("Trigger: %s failed", command[0])
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _execute(self, command: list[str]) -> None:
        try:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, cwd=self.data,
                                    start_new_session=True)
        except OSError as err:
            self.logger.error("Trigger: cannot run %s: %s", command[0], err)
            return
        with self._lock:
            self._procs.add(proc)
            if not self.running:  # shut down while the script was starting
                self._kill(proc)
        try:
            try:
                out, err = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                out, err = proc.communicate()
                self.logger.error("Trigger: %s for %s ran longer than %ss and was killed",
                                  command[0], command[1], self.timeout)
                return
        finally:
            with self._lock:
                self._procs.discard(proc)
        if out.strip():
            self.logger.info("Trigger: %s for %s: %s", command[0], command[1],
                             out.decode(errors="replace").strip())
        if proc.returncode != 0:
            self.logger.error("Trigger: %s for %s exited with status %s: %s", command[0],
                              command[1], proc.returncode, err.decode(errors="replace").strip())
        elif err.strip():
            self.logger.warning("Trigger: %s for %s wrote to stderr: %s", command[0],
                                command[1], err.decode(errors="replace").strip())

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """Kill the script and everything it started (its own session)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> bool:
        """Wait for the scripts started so far; True if all finished in time."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def shutdown(self) -> None:
        """Kill scripts still running and wait for their threads."""
        with self._lock:
            super().shutdown()
            procs = list(self._procs)
        for proc in procs:
            self._kill(proc)
        self.wait(10)
