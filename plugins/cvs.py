"""Cvs: a revision of the repository's CVS working directory, from cvs itself."""

from __future__ import annotations

import os

from bcfg2.plugin import VcsCommandError, VcsVersion

#: bytes of ``cvs log`` read: enough for the headers of the first files
LOG_PREFIX = 65536


class Cvs(VcsVersion):
    """Reports the head revision of the first file ``cvs log`` lists (``1.7``).

    CVS numbers files, not the repository, so this is the closest there is;
    upstream read the same line but sent it whole (``head: 1.7``).
    The file may sit in any directory, so the revision is read each time the
    core asks (after every burst of repository changes) and when the top
    directory's ``CVS/Entries`` changes.
    """

    command = "cvs"
    package = "cvs"
    kind = "a CVS working directory"
    reread_always = True

    def read_revision(self) -> str:
        log = self.vcs("-Q", "log", "-h", limit=LOG_PREFIX, truncate=True)
        for line in log.splitlines():
            if line.startswith("head:"):
                return line.partition(":")[2].strip()
        raise VcsCommandError("cvs log names no file with a head revision")

    def watched_files(self) -> list[str]:
        return [os.path.join(self.vcs_root, "CVS", "Entries")]
