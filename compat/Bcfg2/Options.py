"""``Bcfg2.Options``: the options of the running server, as upstream's code reads them.

Upstream 1.4 code reads ``Bcfg2.Options.setup.repository`` (one flat
namespace); code written for 1.2 and 1.3 builds an ``OptionParser`` from
option constants (``SERVER_REPOSITORY``) and indexes it. Both read the
options the core in this process runs with (``bcfg2.options.in_service``).
Only reading is supported: repository code has nothing to set.
"""

from __future__ import annotations

from typing import Any

from bcfg2.options import Setup, in_service

__all__ = ["OptionParser", "SERVER_REPOSITORY", "setup"]


def _running() -> Setup:
    found = in_service()
    if found is None:
        raise AttributeError("no server is running in this process, so there are no options")
    return found


class _Flat:
    """``setup.NAME``: ``[server] NAME``, else the one section that has an option NAME.

    ``setup.repository``, ``setup.filemonitor``, ``setup.password`` (of
    ``[communication]``)... An option name that several sections share
    other than ``[server]`` is ambiguous upstream too and is an error here.
    """

    def __getattr__(self, name: str) -> Any:
        setup = _running()
        if name.startswith("_"):
            raise AttributeError(name)
        sections = [opt.section for opt in setup.options if opt.name == name]
        if "server" in sections:
            return setup.get("server", name)
        if len(set(sections)) == 1:
            return setup.get(sections[0], name)
        if not sections:
            raise AttributeError(f"this server has no option {name!r}")
        raise AttributeError(f"option {name!r} is in several sections "
                             f"({', '.join(sorted(set(sections)))}); read it as "
                             f"bcfg2.options.in_service().SECTION.{name}")


#: upstream 1.4's ``Bcfg2.Options.setup``
setup = _Flat()


class _Constant:
    """An option constant of upstream 1.2/1.3 (``SERVER_REPOSITORY``): where it is kept."""

    def __init__(self, section: str, name: str) -> None:
        self.section = section
        self.name = name


SERVER_REPOSITORY = _Constant("server", "repository")


class OptionParser(dict):
    """Upstream 1.2/1.3's parser: ``OptionParser({"repo": SERVER_REPOSITORY})``, then
    ``parse(argv)`` (which reads nothing: the server's options are already parsed) and
    ``parser["repo"]``."""

    def __init__(self, args: dict[str, Any], quiet: bool = False) -> None:
        super().__init__()
        self.wanted = dict(args)

    def parse(self, argv: Any = None, do_getopt: bool = True) -> None:
        setup = _running()
        for key, constant in self.wanted.items():
            if isinstance(constant, _Constant):
                self[key] = setup.get(constant.section, constant.name)
