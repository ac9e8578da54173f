"""Bzr: the revision of the repository's Bazaar branch, from Breezy's brz."""

from __future__ import annotations

import os

from bcfg2.plugin import VcsVersion


class Bzr(VcsVersion):
    """Reports the branch's revision number (``brz revno``), with ``+`` for local changes.

    As upstream did, a working tree with changes not committed, or with
    files not added, reports e.g. ``12+``. Since edits count, the revision is
    read each time the core asks (after every burst of repository changes),
    and when the branch or the tree's state file changes (a commit).
    """

    command = "brz"
    package = "brz"
    kind = "a Bazaar branch"
    reread_always = True
    environment = {"BRZ_PROGRESS_BAR": "none"}

    def read_revision(self) -> str:
        revno = self.vcs("revno", "--", self.vcs_root).strip()
        changes = self.vcs("status", "--short", "--", self.vcs_root, limit=4096, truncate=True)
        return revno + "+" if changes.strip() else revno

    def watched_files(self) -> list[str]:
        root = self.vcs("root", "--", self.vcs_root).strip()
        return [os.path.join(root, ".bzr", "branch", "last-revision"),
                os.path.join(root, ".bzr", "checkout", "dirstate")]
