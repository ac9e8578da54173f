"""Cfg: encrypted versions (``motd.crypt``, ``motd.H_host.crypt``, ``motd.genshi.crypt``).

An encrypted version wraps the version its decrypted text would be: a plain
file, or a template of any extension in ``TEMPLATE_EXTENSIONS``. Each time
the file changes it is decrypted (``bcfg2.encryption``: with the passphrase
its header names, else with each passphrase of ``[encryption]`` in turn, as
upstream does) and the plaintext is handed to the inner version, which
compiles it if it is a template. The ciphertext is the only thing on disk;
the plaintext lives in memory only.

A file no passphrase decrypts (wrong passphrase, changed bytes, compat data
that does not decrypt to text) is logged once with its path; until a good
version was read, its entry fails with that reason, never with garbage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import lxml.etree

from bcfg2.encryption import CRYPT_SUFFIX, Encryption
from bcfg2.errors import RepositoryError
from bcfg2.plugin import PluginExecutionError, SpecificData, Specificity

if TYPE_CHECKING:
    from bcfg2.filemonitor import FileMonitor
    from bcfg2.metadata import ClientMetadata

__all__ = ["CRYPT", "CfgEncryptedGenerator"]

#: the suffix of an encrypted version, after or before a template's extension
CRYPT = CRYPT_SUFFIX


class CfgEncryptedGenerator(SpecificData):
    """An encrypted file; ``inner`` is the version (plain or template) its plaintext makes."""

    def __init__(self, name: str, specific: Specificity, fam: FileMonitor | None,
                 inner: SpecificData, encryption: Encryption) -> None:
        super().__init__(name, specific, fam)
        self.inner = inner
        self.encryption = encryption

    def Index(self) -> None:  # noqa: N802
        """Decrypt, then let the inner version index the plaintext (or keep its old one)."""
        plaintext, _name = self.encryption.decrypt(self.data, what=self.name)
        previous = self.inner.data
        self.inner.data = plaintext
        try:
            self.inner.Index()
        except RepositoryError:
            self.inner.data = previous
            raise

    @property
    def by_likeness(self) -> bool:  # type: ignore[override]
        """As the version its plaintext makes: a plain file's content is the client's alike."""
        return self.inner.by_likeness

    def get_data(self, entry: lxml.etree._Element, metadata: ClientMetadata) -> bytes:
        """The inner version's content; a failure if this file was never decrypted."""
        if not self.in_service:  # the error names this file
            raise PluginExecutionError(self.error or f"{self.name}: not read yet")
        return self.inner.get_data(entry, metadata)  # type: ignore[attr-defined]
