"""Svn: the revision of the repository's Subversion working copy, from svn itself."""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from bcfg2.plugin import Option, VcsVersion, exposed
from bcfg2.untrusted import client_text

#: a revision an admin may name for Update: a number or HEAD
REVISION = re.compile(r"[0-9]{1,10}|HEAD")
#: seconds an update (from a remote repository) may take
UPDATE_TIMEOUT = 300.0
#: the conflict resolutions that need nobody at a terminal (``svn --accept``)
RESOLUTIONS = ("base", "postpone", "mine-conflict", "theirs-conflict", "mine-full",
               "theirs-full")


class Svn(VcsVersion):
    """Reports the revision ``svn info`` gives the working copy's root.

    It is read again when the working copy's database (``.svn/wc.db``)
    changes: after ``svn update`` or ``Svn.Update``. A commit alone leaves
    the root at its old revision, as Subversion itself says until the next
    update.
    """

    command = "svn"
    package = "subversion"
    kind = "a Subversion working copy"
    options = (
        Option("svn", "conflict_resolution", "postpone",
               "How Svn.Update resolves conflicts with local changes (svn --accept).",
               type="choice", choices=RESOLUTIONS),
    )

    def __init__(self, core: Any) -> None:
        self._update_lock = threading.Lock()
        super().__init__(core)
        self.conflict_resolution: str = core.setup.svn.conflict_resolution

    def read_revision(self) -> str:
        return self.vcs("info", "--non-interactive", "--show-item", "revision",
                        "--", self.vcs_root).strip()

    def watched_files(self) -> list[str]:
        root = self.vcs("info", "--non-interactive", "--show-item", "wc-root",
                        "--", self.vcs_root).strip()
        return [os.path.join(root, ".svn", "wc.db")]

    @exposed
    def Update(self, revision: str | None = None) -> bool:  # noqa: N802
        """Update the working copy to ``revision`` (a number or HEAD), by default HEAD.

        Conflicts with local changes are resolved as ``[svn]
        conflict_resolution`` says. The new revision is reported at once.
        """
        target = "HEAD" if revision is None else client_text(
            revision, "a Subversion revision", REVISION, 10)
        with self._update_lock:
            self.vcs("update", "--non-interactive", "--accept", self.conflict_resolution,
                     "-r", target, "--", self.vcs_root, timeout=UPDATE_TIMEOUT)
            self.refresh_revision()
            self.core.update_revision()  # the next configuration carries it, event or not
        self.logger.info("Svn.Update: %s is at revision %s", self.vcs_root, self.revision)
        return True
