"""Fossil: the check-in of the repository's Fossil checkout, from fossil itself."""

from __future__ import annotations

import os

from bcfg2.plugin import VcsCommandError, VcsVersion

#: the checkout database, under its current name and the one older fossils used
CHECKOUT_FILES = (".fslckout", "_FOSSIL_")


class Fossil(VcsVersion):
    """Reports the check-in ``fossil info`` names on its ``checkout:`` line, as upstream did.

    It is read again when the checkout database (``.fslckout``) changes:
    a commit, an update, a checkout.
    """

    command = "fossil"
    package = "fossil"
    kind = "a Fossil checkout"

    def _info(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in self.vcs("info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        return fields

    def read_revision(self) -> str:
        checkout = self._info().get("checkout", "").split()
        if not checkout:
            raise VcsCommandError("fossil info names no checkout")
        return checkout[0]

    def watched_files(self) -> list[str]:
        root = self._info().get("local-root") or self.vcs_root
        names = [name for name in CHECKOUT_FILES if os.path.exists(os.path.join(root, name))]
        return [os.path.join(root, name) for name in names or CHECKOUT_FILES[:1]]
