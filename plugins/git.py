"""Git: the repository's revision (sent in each Configuration), from git itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from bcfg2.errors import PluginInitError
from bcfg2.plugin import Version


class Git(Version):
    """Reports ``git rev-parse HEAD`` of the repository's checkout.

    The revision is read again when ``HEAD``, the branch it points to, or
    ``packed-refs`` changes (a commit, a pull, a checkout), never per request.
    """

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.vcs_root = core.setup.server.vcs_root or core.repository
        if shutil.which("git") is None:
            raise PluginInitError("the git command is not installed")
        try:
            self.git_dir = self._git("rev-parse", "--absolute-git-dir")
        except PluginInitError as err:
            raise PluginInitError(f"{self.vcs_root} is not in a git checkout "
                                  f"([server] vcs_root): {err}") from None
        self.revision = "-1"
        self._ref: tuple[str, int] | None = None
        self._update()
        for name in ("HEAD", "packed-refs"):
            core.fam.AddMonitor(os.path.join(self.git_dir, name), self)

    def _git(self, *args: str) -> str:
        try:
            result = subprocess.run(["git", "-C", self.vcs_root, *args], capture_output=True,
                                    text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise PluginInitError(f"git {' '.join(args)} failed: {err}") from None
        if result.returncode != 0:
            raise PluginInitError(result.stderr.strip() or f"git {' '.join(args)} failed")
        return result.stdout.strip()

    def _update(self) -> None:
        """Read the revision and follow HEAD to the branch it names."""
        try:
            self.revision = self._git("rev-parse", "HEAD")
        except PluginInitError as err:
            self.logger.error("Cannot read the git revision: %s", err)
        try:
            ref = self._git("symbolic-ref", "-q", "HEAD")
        except PluginInitError:
            ref = ""  # detached HEAD: HEAD itself holds the revision
        path = os.path.join(self.git_dir, ref) if ref else None
        if self._ref is not None and self._ref[0] != path:
            self.core.fam.RemoveMonitor(self._ref[1])
            self._ref = None
        if path is not None and self._ref is None:
            self._ref = (path, self.core.fam.AddMonitor(path, self))

    def HandleEvent(self, event: Any) -> None:  # noqa: N802
        if event.action in ("exists", "endExist"):
            return
        self._update()

    def get_revision(self) -> str:
        return self.revision
