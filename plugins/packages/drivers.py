"""From a (source, architecture) to an Index: the formats behind one call.

``load`` fetches what the source's type needs (``apt``, ``yum``, ``pac``,
``pkgng``) and parses it; whatever goes wrong, from a timeout to a corrupt
tar, comes out as one ``SourceError`` whose message names the URL and the
problem, so the plugin can keep the last good index and log it once.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lxml.etree

from bcfg2.plugins.packages import apt, pac, pkgng, yum
from bcfg2.plugins.packages.fetch import Fetcher, FetchError
from bcfg2.plugins.packages.index import Index

if TYPE_CHECKING:
    from bcfg2.plugins.packages.sources import Source

LOADERS = {"apt": apt.load, "yum": yum.load, "pac": pac.load, "pkgng": pkgng.load}


class SourceError(Exception):
    """A source whose index could not be fetched or read."""


@dataclass
class Loaded:
    """An index fetched: the key of what it was read from, the index, the files read."""

    key: str
    index: Index
    files: list[str]


def load(source: Source, arch: str, fetcher: Fetcher, known_key: str | None = None
         ) -> Loaded | None:
    """The source's index for ``arch``; None when its key is ``known_key`` (unchanged)."""
    try:
        result = LOADERS[source.type](source, arch, fetcher, known_key)
    except FetchError as err:
        raise SourceError(str(err)) from None
    except (lxml.etree.LxmlError, tarfile.TarError, json.JSONDecodeError, zlib.error,
            UnicodeError, ValueError, KeyError, IndexError, OSError, EOFError) as err:
        raise SourceError(f"{source.base_url}: cannot read the index: "
                          f"{type(err).__name__}: {err}") from None
    if result is None:
        return None
    key, index, files = result
    return Loaded(key, index, files)
