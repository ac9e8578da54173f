"""Git: the repository's revision (sent in each Configuration), from git itself."""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from bcfg2.plugin import PluginExecutionError, VcsCommandError, VcsVersion, exposed
from bcfg2.untrusted import client_text

#: a commit an admin may name for Update: an abbreviated or full SHA-1 or SHA-256 name
COMMIT = re.compile(r"[0-9a-fA-F]{4,64}")
#: seconds an update (a fetch from the remote) may take
UPDATE_TIMEOUT = 300.0


class Git(VcsVersion):
    """Reports ``git rev-parse HEAD`` of the repository's checkout.

    The revision is read again when ``HEAD``, the branch it points to, or
    ``packed-refs`` changes (a commit, a pull, a checkout), never per request.
    ``Git.Update`` (admins only) checks out a commit or pulls the upstream branch.
    """

    command = "git"
    package = "git"
    kind = "a git checkout"

    def __init__(self, core: Any) -> None:
        self._ref: tuple[str, int] | None = None
        self._update_lock = threading.Lock()
        #: Update and the file monitor both move the branch's monitor
        self._follow_lock = threading.Lock()
        super().__init__(core)
        self._follow_branch()

    def read_revision(self) -> str:
        return self.vcs("rev-parse", "HEAD").strip()

    def watched_files(self) -> list[str]:
        self.git_dir = self.vcs("rev-parse", "--absolute-git-dir").strip()
        return [os.path.join(self.git_dir, name) for name in ("HEAD", "packed-refs")]

    def _follow_branch(self) -> None:
        """Watch the file of the branch HEAD names (none when HEAD is detached)."""
        try:
            ref = self.vcs("symbolic-ref", "-q", "HEAD").strip()
        except VcsCommandError:
            ref = ""  # detached HEAD: HEAD itself holds the revision
        path = os.path.join(self.git_dir, ref) if ref else None
        with self._follow_lock:
            if self._ref is not None and self._ref[0] != path:
                self.core.fam.RemoveMonitor(self._ref[1])
                self._ref = None
            if path is not None and self._ref is None:
                self._ref = (path, self.core.fam.AddMonitor(path, self))

    def refresh_revision(self) -> None:
        super().refresh_revision()
        self._follow_branch()

    @exposed
    def Update(self, revision: str | None = None) -> bool:  # noqa: N802
        """Check out ``revision`` (a commit name), or pull the branch's upstream.

        With a commit the working copy is forced to it and stays there
        (detached) until another Update names one. Without, a branch that
        tracks a remote branch is brought up to date with it (fast-forward
        only: local commits are never rewritten); a detached HEAD or a branch
        without upstream is left alone. The new revision is reported at once.
        """
        with self._update_lock:
            if revision is not None:
                name = client_text(revision, "a git commit", COMMIT, 64)
                try:
                    commit = self.vcs("rev-parse", "--verify", "--quiet", "--end-of-options",
                                      f"{name}^{{commit}}").strip()
                except VcsCommandError:
                    raise PluginExecutionError(f"Git.Update: {name} names no commit "
                                               f"(or more than one)") from None
                self.vcs("checkout", "-q", "-f", commit, timeout=UPDATE_TIMEOUT)
            elif self._upstream():
                self.vcs("pull", "-q", "--ff-only", timeout=UPDATE_TIMEOUT)
            else:
                self.logger.info("Git.Update: no upstream branch to update from")
            self.refresh_revision()
            self.core.update_revision()  # the next configuration carries it, event or not
        self.logger.info("Git.Update: %s is at %s", self.vcs_root, self.revision)
        return True

    def _upstream(self) -> bool:
        """Whether HEAD is a branch that tracks another one."""
        try:
            self.vcs("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
        except VcsCommandError:
            return False
        return True
