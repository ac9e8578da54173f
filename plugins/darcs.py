"""Darcs: the latest patch of the repository's darcs repository, from darcs itself."""

from __future__ import annotations

import os
import re

from bcfg2.plugin import VcsCommandError, VcsVersion

#: the first line ``darcs log`` prints for a patch
PATCH_LINE = re.compile(r"patch ([0-9a-f]{40,64})")


class Darcs(VcsVersion):
    """Reports the hash of the latest patch (``darcs log --last 1``); -1 with no patch yet.

    Upstream reported the first line ``darcs changes`` printed, which darcs
    2.10 and later make ``patch <hash>``; the hash is that line's news. It
    is read again when the inventory (``_darcs/hashed_inventory``) changes:
    a record, a pull, an unrecord.
    """

    command = "darcs"
    package = "darcs"
    kind = "a darcs repository"

    def read_revision(self) -> str:
        log = self.vcs("log", "--last", "1", "--repodir", self.vcs_root, limit=65536,
                       truncate=True)
        if not log.strip():
            return "-1"
        found = PATCH_LINE.fullmatch(log.splitlines()[0].strip())
        if found is None:
            raise VcsCommandError("darcs log does not begin with a patch line")
        return found.group(1)

    def watched_files(self) -> list[str]:
        shown = self.vcs("show", "repo", "--repodir", self.vcs_root)
        root = next((line.partition(":")[2].strip() for line in shown.splitlines()
                     if line.strip().startswith("Root:")), self.vcs_root)
        return [os.path.join(root, "_darcs", "hashed_inventory")]
