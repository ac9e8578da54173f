"""The interactive loop: readline history and tab completion of commands and arguments."""

from __future__ import annotations

from typing import Any

from bcfg2.info.shell import PROG, Shell, logger
from bcfg2.plugin import Generator, PropertyFiles, Structure


class Completion(Shell):
    """History and completion: each argument of a command completes by what it is."""

    def interact(self) -> None:
        """The interactive loop; Ctrl-C abandons the line, quit or Ctrl-D leaves."""
        intro = (f"{PROG}: {len(self.core.metadata.list_clients())} clients in "
                 f"{self.core.repository}\nType 'help' for the commands, 'quit' to leave.")
        readline = _readline()
        if readline is not None:
            # paths, client names and options are single words for completion
            readline.set_completer_delims(" \t\n")
        self.load_history()
        try:
            while True:
                try:
                    self.cmdloop(intro)
                    return
                except KeyboardInterrupt:
                    self.out("")
                    intro = ""
        finally:
            self.save_history()

    # -- readline: history and completion -----------------------------------

    def load_history(self) -> bool:
        """Read the history file into readline; False if there is none to read."""
        readline = _readline()
        if readline is None or not self.history:
            return False
        try:
            readline.read_history_file(self.history)
        except OSError:
            return False
        return True

    def save_history(self) -> bool:
        """Write readline's history to the history file; False if that cannot be done."""
        readline = _readline()
        if readline is None or not self.history:
            return False
        try:
            readline.set_history_length(1000)
            readline.write_history_file(self.history)
        except OSError as err:
            logger.debug("cannot save the history to %s: %s", self.history, err)
            return False
        return True

    def candidates(self, kind: str | None, previous: list[str]) -> list[str]:
        """Every possible value of one kind of argument (for completion)."""
        if kind == "client":
            return self.core.metadata.list_clients()
        if kind == "group":
            return self.group_names()
        if kind == "target":  # a client or a group
            return self.candidates("client", previous) + self.candidates("group", previous)
        if kind == "bundle":
            return sorted({name for plugin in self.core.plugins_by_type(Structure)
                           for name in plugin.list_bundles()})
        if kind == "property":
            return sorted({name for plugin in self.core.plugins_by_type(PropertyFiles)
                           for name in plugin.list_property_files() if name.endswith(".xml")})
        if kind == "path":
            return sorted({name for tag, name in self.mapped() if tag == "Path"})
        if kind == "type":
            return sorted({tag for tag, _name in self.mapped()})
        if kind == "name":  # an entry name of the type given just before
            wanted = previous[-1].lower() if previous else None
            return sorted({name for tag, name in self.mapped()
                           if wanted is None or tag.lower() == wanted})
        if kind == "command":
            return [name[3:] for name in self.get_names() if name.startswith("do_")]
        return []

    def mapped(self) -> list[tuple[str, str]]:
        """(tag, name) of every entry some generator names."""
        return [item for gen in self.core.plugins_by_type(Generator)
                for item in gen.list_entries()]

    def complete_arguments(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """Tab completion of a command's arguments, by what each argument is."""
        words = line[:begidx].split()
        if not words:
            return self.completenames(text, line, begidx, endidx)
        name, previous = words[0], [w for w in words[1:] if not w.startswith("-")]
        if name == "profile":
            rest = line[len(line) - len(line.lstrip()):].split(None, 1)[1] \
                if len(line.split(None, 1)) > 1 else ""
            offset = len(line) - len(rest)
            if not rest[:begidx - offset].split():
                return self.completenames(text, rest, begidx - offset, endidx - offset)
            return self.complete_arguments(text, rest, begidx - offset, endidx - offset)
        handler = getattr(self, f"do_{name}", None)
        kinds = getattr(handler, "arguments", ())
        if not kinds:
            return []
        index = len(previous)
        if index < len(kinds):
            kind = kinds[index]
        elif kinds[-1] and kinds[-1].endswith("*"):
            kind = kinds[-1]
        else:
            return []
        kind = kind.rstrip("*") if kind else None
        return [c for c in self.candidates(kind, previous) if c.startswith(text)]

    def complete_client(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        """Tab completion of client names."""
        return [name for name in self.core.metadata.list_clients() if name.startswith(text)]

    complete_build = complete_buildfile = complete_showclient = complete_arguments
    complete_showentries = complete_buildall = complete_buildallfile = complete_arguments
    complete_buildbundle = complete_automatch = complete_expirecache = complete_arguments
    complete_mappings = complete_profile = complete_arguments


def _readline() -> Any:
    """The readline module, or None where Python has none."""
    try:
        import readline
    except ImportError:
        return None
    return readline
