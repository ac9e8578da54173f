"""Cfg ``:test`` verifiers: a script that must accept a file's content before it is served.

``Cfg/etc/sudoers/:test`` (and ``:test.G80_group``, ``:test.H_host`` for
some clients only, chosen by specificity like the file's versions) gets the
content the client would receive on its standard input, with no
arguments. Exit status 0 serves the entry; anything else fails that entry
with what the script printed, so a broken sudoers never reaches a client.
A script that is not executable is run by the interpreter its ``#!`` line
names. ``[cfg] validation = false`` turns verification off (bcfg2-test can
still be run with validation in a commit hook).

The script is the repository author's code, run as the server's user:
without a shell, in its own directory, with a time limit
(``[cfg] validation_timeout``), and with its output cut to a bounded
message.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from bcfg2.plugin import PluginExecutionError, SpecificData
from bcfg2.untrusted import escaped

__all__ = ["CfgExternalCommandVerifier", "VERIFIER"]

#: the file name (before any specificity suffix) of a verifier
VERIFIER = ":test"
#: the most of a failing verifier's output that goes into the entry's failure
MAX_MESSAGE = 2000


class CfgExternalCommandVerifier(SpecificData):
    """One ``:test`` script."""

    def command(self) -> list[str]:
        """The argv that runs the script: itself if executable, else its ``#!`` interpreter."""
        if os.access(self.name, os.X_OK):
            return [self.name]
        first = self.data.split(b"\n", 1)[0]
        if first.startswith(b"#!"):
            interpreter = shlex.split(first[2:].decode("utf-8", "replace"))
            if interpreter:
                return [*interpreter, self.name]
        raise PluginExecutionError(f"{self.name}: a verifier must be executable or start "
                                   f"with a #! line")

    def verify(self, entry_name: str, content: bytes, timeout: float) -> None:
        """Return if the script accepts ``content``; a PluginExecutionError saying why not."""
        argv = self.command()
        try:
            done = subprocess.run(argv, input=content, capture_output=True, timeout=timeout,
                                  cwd=os.path.dirname(self.name), check=False)
        except subprocess.TimeoutExpired:
            raise PluginExecutionError(f"{entry_name}: the verifier {self.name} did not "
                                       f"finish within {timeout:g} s") from None
        except OSError as err:
            raise PluginExecutionError(f"{entry_name}: the verifier {self.name} cannot run: "
                                       f"{err.strerror or err}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
            status = (f"exit status {done.returncode}" if done.returncode > 0
                      else f"signal {-done.returncode}")
            raise PluginExecutionError(
                f"{entry_name}: the content fails the verifier {self.name} ({status})"
                + (f": {escaped(said, MAX_MESSAGE)}" if said else ""))
