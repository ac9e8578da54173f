"""bcfg2-crypt: encrypt, decrypt and re-key Cfg files and Properties files.

A Cfg file is encrypted whole: ``foo.conf`` becomes ``foo.conf.crypt`` (a
template ``foo.genshi`` becomes ``foo.genshi.crypt``), and decrypting gives
the plaintext name back. In a Properties file the text of single elements is
encrypted, each with the passphrase its ``encrypted="NAME"`` attribute names
(set on the elements ``--xpath`` selects; by default those that have it,
else every element with text); decrypting keeps the attribute, so running the
tool again encrypts the same elements. Without ``--encrypt``/``--decrypt``
the tool does what the file asks for: decrypts encrypted data, encrypts the
rest. ``--rekey`` decrypts and encrypts again, with ``-p NAME`` and/or in
``--format``.

Passphrases are only ever named (``-p NAME``); their values come from the
``[encryption]`` section of bcfg2.conf (``-C``), never from the command
line. Files are written atomically with the mode of the file they come from;
a file that cannot be processed is reported and left as it was.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

import lxml.etree

from bcfg2 import options, tools
from bcfg2.encryption import CRYPT_SUFFIX, FORMATS, Encryption, detect_format
from bcfg2.errors import ConfigError, DecryptionError
from bcfg2.logger import setup_logging
from bcfg2.xml import atomic_write

PROG = "bcfg2-crypt"
logger = logging.getLogger(PROG)

DESCRIPTION = """\
Encrypt or decrypt Cfg files (whole) and Properties files (element by element).
Passphrases are named with -p and read from [encryption] in bcfg2.conf.

The default format, auth (AES-256-GCM, key from scrypt), is detected when
decrypting and protects against a wrong passphrase and tampering, but upstream
Bcfg2 and `openssl enc` cannot read it. For a repository that upstream servers
read too, write the compat format: --format compat, or [encryption] format =
compat. Compat Cfg files are what `openssl enc -aes-256-cbc -md md5 -a` writes
and reads.
"""

#: the default selection of Properties elements, and the one used if it selects none
DEFAULT_XPATH = "//*[@encrypted]"
FALLBACK_XPATH = "//*"


def build_parser() -> argparse.ArgumentParser:
    """The command line: bcfg2.conf, what to do, with which passphrase, and the files."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_version_flag(parser)
    parser.add_argument("-C", "--config", default=None, metavar="FILE",
                        help=f"the server's bcfg2.conf, with the [encryption] section (default "
                             f"{options.DEFAULT_CONFIG})")
    parser.add_argument("-v", "--verbose", dest="logging.verbose", action="store_const",
                        const=True, default=None, help="say what is done to each file")
    parser.add_argument("-d", "--debug", dest="logging.debug", action="store_const",
                        const=True, default=None, help="log debug messages, show tracebacks")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--encrypt", dest="action", action="store_const", const="encrypt",
                        help="encrypt (default: whatever is not encrypted yet)")
    action.add_argument("--decrypt", dest="action", action="store_const", const="decrypt",
                        help="decrypt (default: whatever is encrypted)")
    action.add_argument("--rekey", dest="action", action="store_const", const="rekey",
                        help="decrypt and encrypt again, with -p NAME and/or in --format")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--cfg", dest="kind", action="store_const", const="cfg",
                      help="treat the files as Cfg files, encrypted whole (the default unless "
                           "a file is XML whose root element is <Properties>)")
    kind.add_argument("--properties", dest="kind", action="store_const", const="properties",
                      help="treat the files as Properties files, encrypted element by element "
                           "(needed if the root element is not <Properties>)")
    parser.add_argument("-p", "--passphrase", metavar="NAME", default=None,
                        help="the NAME of the passphrase in [encryption] to encrypt with (to "
                             "decrypt with, for Cfg files); never the passphrase itself. "
                             "Default: the only one configured; for Properties elements the "
                             "one their encrypted attribute names; when decrypting, each in turn")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="format to write: auth (default, [encryption] format; not readable "
                             "by upstream Bcfg2 or openssl) or compat (upstream's, openssl enc "
                             "-aes-256-cbc -md md5 -a; no integrity check, text only)")
    parser.add_argument("--xpath", default=None, metavar="XPATH",
                        help=f"Properties: the elements whose text to encrypt (default "
                             f"{DEFAULT_XPATH}, or {FALLBACK_XPATH} if that selects none)")
    parser.add_argument("--stdout", action="store_true",
                        help="print the result instead of writing a file")
    parser.add_argument("--remove", action="store_true",
                        help="Cfg: remove the plaintext file once it is encrypted")
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Process each file given; the status is 1 if any of them failed, 2 for a usage error."""
    ns_holder: list[argparse.Namespace] = []

    def go() -> int:
        ns = build_parser().parse_args(argv)
        ns_holder.append(ns)
        try:
            setup = options.build(ns.config, vars(ns))
        except ConfigError as err:
            raise tools.ToolError(str(err), status=2) from None
        setup.set("logging", "syslog", False)
        setup_logging(setup, console=True, prog=PROG)
        encryption = Encryption.from_setup(setup)
        if ns.passphrase is not None and not _known(encryption, ns.passphrase):
            # not echoed: it may be a passphrase typed by mistake
            known = ", ".join(sorted(encryption.passphrases)) or "none"
            raise tools.ToolError(f"-p: no passphrase of that name in [encryption] of "
                                  f"{setup.config_file or 'bcfg2.conf'} (names: {known}); -p takes "
                                  f"a name, never a passphrase", status=2)
        if ns.stdout and len(ns.files) > 1:
            raise tools.ToolError("--stdout takes one file", status=2)
        crypt = Crypt(encryption, ns)
        failed = 0
        for path in ns.files:
            try:
                crypt.process(path)
            except (tools.ToolError, DecryptionError, OSError) as err:
                print(f"{PROG}: {err}", file=sys.stderr)
                failed += 1
        return 1 if failed else 0

    return tools.run(PROG, go, lambda: bool(ns_holder and vars(ns_holder[0])["logging.debug"]))


def _known(encryption: Encryption, name: str) -> bool:
    try:
        encryption.passphrase(name)
    except DecryptionError:
        return False
    return True


class Crypt:
    """What one run does to each file it is given."""

    def __init__(self, encryption: Encryption, ns: argparse.Namespace) -> None:
        self.encryption = encryption
        self.action: str | None = ns.action
        self.kind: str | None = ns.kind
        self.name: str | None = ns.passphrase
        self.format: str = ns.format or encryption.format
        self.xpath: str | None = ns.xpath
        self.stdout: bool = ns.stdout
        self.remove: bool = ns.remove

    # -- choosing -------------------------------------------------------------------------------

    def process(self, path: str) -> None:
        """Encrypt, decrypt or re-key one file, as a Cfg or a Properties file."""
        with open(path, "rb") as fh:
            data = fh.read()
        root = self._properties_root(path, data)
        if root is not None:
            self._properties(path, root, _declaration(data))
        else:
            self._cfg(path, data)

    def _properties_root(self, path: str, data: bytes) -> lxml.etree._Element | None:
        """The parsed root if this is to be handled as a Properties file, else None."""
        if self.kind == "cfg" or (self.kind is None and not path.endswith(".xml")):
            return None
        parser = lxml.etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                      huge_tree=False)
        try:
            root = lxml.etree.fromstring(data, parser)
        except lxml.etree.XMLSyntaxError as err:
            if self.kind == "properties":
                raise tools.ToolError(f"{path}: not XML: {err}") from None
            return None
        if self.kind is None and root.tag != "Properties":
            return None
        return root

    def _passphrase_for_encrypting(self, path: str, own: str | None = None) -> str:
        """The element's own passphrase name if known, else -p, else the only one there is."""
        if own and _known(self.encryption, own):
            return own
        if self.name is not None:
            return self.name
        names = sorted(self.encryption.passphrases)
        if len(names) == 1:
            return names[0]
        if not names:
            raise tools.ToolError(f"{path}: no passphrases in [encryption] to encrypt with")
        raise tools.ToolError(f"{path}: {len(names)} passphrases in [encryption]; choose one "
                              f"with -p NAME")

    # -- Cfg ------------------------------------------------------------------------------------

    def _cfg(self, path: str, data: bytes) -> None:
        encrypted = detect_format(data) is not None
        action = self.action or ("decrypt" if encrypted else "encrypt")
        if action in ("decrypt", "rekey") and not encrypted:
            raise tools.ToolError(f"{path}: not encrypted (no {action} possible)")
        if action == "encrypt" and encrypted:
            raise tools.ToolError(f"{path}: already encrypted (use --rekey to re-encrypt it)")
        if action == "encrypt":
            name = self._passphrase_for_encrypting(path)
            out = self.encryption.encrypt(data, name, self.format)
            self._write(path, encrypted_name(path), out.encode("ascii"))
            if self.remove and not self.stdout:
                os.unlink(path)
                logger.info("%s: removed", path)
            return
        # re-keying: -p names the new passphrase; the old one is the header's, or each in turn
        plaintext, used = self.encryption.decrypt(
            data, self.name if action == "decrypt" else None, what=path)
        if action == "decrypt":
            target = path if self.stdout else decrypted_name(path)
            if target is None:
                raise tools.ToolError(f"{path}: its name does not end in {CRYPT_SUFFIX}, so the "
                                      f"plaintext's name is unknown; use --stdout")
            if not self.stdout and os.path.exists(target) and _read(target) != plaintext:
                raise tools.ToolError(f"{path}: {target} exists and differs from the decrypted "
                                      f"text; move it away first or use --stdout")
            self._write(path, target, plaintext)
            return
        name = self.name or used
        self._write(path, path, self.encryption.encrypt(plaintext, name, self.format)
                    .encode("ascii"))

    # -- Properties -----------------------------------------------------------------------------

    def _properties(self, path: str, root: lxml.etree._Element, declaration: bytes) -> None:
        flagged = [el for el in root.iter() if isinstance(el.tag, str) and el.get("encrypted")
                   and (el.text or "").strip()]
        any_encrypted = any(detect_format(el.text or "") for el in flagged)
        action = self.action or ("decrypt" if any_encrypted else "encrypt")
        if action == "encrypt":
            count = self._encrypt_elements(path, root)
        else:
            count = self._decrypt_elements(path, root, rekey=action == "rekey")
        if count == 0:
            raise tools.ToolError(f"{path}: no element to {action}")
        if action != "decrypt":
            root.set("encryption", "true")
        logger.info("%s: %sed %d element(s)", path, action.rstrip("e"), count)
        tree = root.getroottree()
        data = declaration + lxml.etree.tostring(tree, encoding=tree.docinfo.encoding or "UTF-8",
                                                 xml_declaration=False)
        self._write(path, path, data if data.endswith(b"\n") else data + b"\n")

    def _selected(self, path: str, root: lxml.etree._Element) -> list[lxml.etree._Element]:
        expressions = [self.xpath] if self.xpath else [DEFAULT_XPATH, FALLBACK_XPATH]
        for expression in expressions:
            try:
                found = root.xpath(expression)
            except lxml.etree.XPathError as err:
                raise tools.ToolError(f"--xpath {expression!r}: {err}", status=2) from None
            if not isinstance(found, list):
                raise tools.ToolError(f"--xpath {expression!r} selects no elements", status=2)
            elements = [el for el in found if isinstance(el, lxml.etree._Element)
                        and isinstance(el.tag, str) and (el.text or "").strip()
                        and el.tag not in ("Group", "Client")]
            if elements:
                return elements
        return []

    def _encrypt_elements(self, path: str, root: lxml.etree._Element) -> int:
        count = 0
        for element in self._selected(path, root):
            if detect_format(element.text or ""):
                continue  # already encrypted
            name = self._passphrase_for_encrypting(path, element.get("encrypted"))
            element.text = self.encryption.encrypt((element.text or "").encode("utf-8"), name,
                                                   self.format, width=None)
            element.set("encrypted", name)
            count += 1
        return count

    def _decrypt_elements(self, path: str, root: lxml.etree._Element, rekey: bool) -> int:
        count = 0
        for element in root.iter():
            name = element.get("encrypted") if isinstance(element.tag, str) else None
            if not name or not detect_format(element.text or ""):
                continue
            what = f"{path}:{element.sourceline}: <{element.tag}>"
            plaintext, used = self.encryption.decrypt(element.text or "", name, what)
            try:
                text = plaintext.decode("utf-8")
            except UnicodeDecodeError:
                raise tools.ToolError(f"{what}: decrypts to something that is not text") from None
            if rekey:
                new = self.name or used
                element.text = self.encryption.encrypt(plaintext, new, self.format, width=None)
                element.set("encrypted", new)
            else:
                element.text = text
            count += 1
        return count

    # -- output ---------------------------------------------------------------------------------

    def _write(self, source: str, target: str, data: bytes) -> None:
        if self.stdout:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        mode = os.stat(source).st_mode & 0o7777
        atomic_write(target, data, mode)
        logger.info("%s: wrote %s", source, target)


def encrypted_name(path: str) -> str:
    """Where the encrypted version of a Cfg file goes: its name and ``.crypt``."""
    return path + CRYPT_SUFFIX


def decrypted_name(path: str) -> str | None:
    """Where a Cfg file's plaintext goes: ``.crypt`` taken out (last, or before a template's
    extension: ``motd.crypt.genshi``); None if the name has no ``.crypt``."""
    directory, fname = os.path.split(path)
    if fname.endswith(CRYPT_SUFFIX) and fname != CRYPT_SUFFIX:
        return os.path.join(directory, fname[:-len(CRYPT_SUFFIX)])
    match = re.fullmatch(r"(.+)\.crypt(\.[A-Za-z0-9]+)", fname)
    if match:
        return os.path.join(directory, match.group(1) + match.group(2))
    return None


def _declaration(data: bytes) -> bytes:
    """The file's own XML declaration and the line end after it, to write back as it was."""
    match = re.match(rb"\s*<\?xml[^>]*\?>\r?\n?", data)
    return match.group(0).lstrip() if match else b""


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


if __name__ == "__main__":
    sys.exit(main())
