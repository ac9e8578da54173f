"""Hg: the revision of the repository's Mercurial repository, from hg itself."""

from __future__ import annotations

import os

from bcfg2.plugin import VcsVersion


class Hg(VcsVersion):
    """Reports the local revision number of the tip (``hg log -r tip``), as upstream did.

    It is read again when the changelog (``.hg/store/00changelog.i``) changes:
    a commit, a pull, a strip. An empty repository reports -1.
    """

    command = "hg"
    package = "mercurial"
    kind = "a Mercurial repository"

    def read_revision(self) -> str:
        return self.vcs("--noninteractive", "log", "-r", "tip", "--template", "{rev}").strip()

    def watched_files(self) -> list[str]:
        root = self.vcs("--noninteractive", "root").strip()
        return [os.path.join(root, ".hg", "store", "00changelog.i")]
