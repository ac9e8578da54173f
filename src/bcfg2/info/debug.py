"""The core and debugging: update, expirecache, caches, event_debug, a Python console,
profiling."""

from __future__ import annotations

import cmd
import code
import cProfile
import io
import logging
import pstats
import shlex
import time
import traceback
from typing import Any

import lxml.etree

from bcfg2.info.shell import LOCAL, CommandError, Shell, command, logger


class EventPrinter(logging.Handler):
    """Shows the file monitor's debug log (one line per event handled) in the shell."""

    def __init__(self, shell: Shell) -> None:
        super().__init__(logging.DEBUG)
        self.shell = shell

    def emit(self, record: logging.LogRecord) -> None:
        self.shell.out(f"event: {record.getMessage()}")


class DebugCommands(Shell):
    """update, expirecache, caches, event_debug, debug, profile."""

    _event_printer: EventPrinter | None = None

    # -- the core ------------------------------------------------------------

    @command("update")
    def do_update(self, words: list[str]) -> bool:
        """Read the repository changes made since the last update (or start)."""
        start = time.monotonic()
        count = self.core.refresh()
        self.out(f"handled {count} file events in {time.monotonic() - start:.3f}s"
                 if count else "no changes")
        return False

    @command("expirecache [client ...]", 0, None, complete=("client*",))
    def do_expirecache(self, words: list[str]) -> bool:
        """Expire the cached metadata of every client, or of those given."""
        names = sorted({self.client(word) for word in words})
        self.core.expire_metadata_cache(LOCAL, names or None)
        self.out(f"expired the cached metadata of {', '.join(names) or 'every client'}")
        return False

    @command("caches")
    def do_caches(self, words: list[str]) -> bool:
        """Show what the caches keep: client metadata, configurations, bound entries."""
        core = self.core
        configs, memo = core.config_cache, core.bind_memo
        self.out(f"client metadata:  {len(core.metadata_cache)} clients")
        self.out(f"configurations:   {len(configs)} kept, {configs.size:,} bytes compressed, "
                 f"{configs.token_sets} token sets; "
                 + ", ".join(f"{key} {value}" for key, value in configs.counts.items()))
        self.out(f"bound entries:    {len(memo)} kept, {memo.size:,} bytes; "
                 + ", ".join(f"{key} {value}" for key, value in memo.counts.items()))
        return False

    @command("event_debug [on|off]", 0, 1)
    def do_event_debug(self, words: list[str]) -> bool:
        """Show each file monitor event as it is handled (by update), or stop showing them."""
        if words and words[0] not in ("on", "off"):
            raise CommandError(f"usage: {self.do_event_debug.usage}")
        enable = not words or words[0] == "on"
        fam_logger = logging.getLogger("bcfg2.filemonitor")
        self.core.set_fam_debug(LOCAL, enable)
        if enable and self._event_printer is None:
            self._event_printer = EventPrinter(self)
            fam_logger.addHandler(self._event_printer)
            fam_logger.setLevel(logging.DEBUG)
            fam_logger.propagate = False
        elif not enable and self._event_printer is not None:
            fam_logger.removeHandler(self._event_printer)
            fam_logger.setLevel(logging.NOTSET)
            fam_logger.propagate = True
            self._event_printer = None
        self.out(f"file monitor events {'shown' if enable else 'hidden'}")
        return False

    @command("debug [-n] [-f <file>]", 0, 3)
    def do_debug(self, words: list[str]) -> bool:
        """Open a Python console (IPython if installed, unless -n) with the core as
        ``self``; Ctrl-D comes back. With -f, run the file's statements there instead."""
        usage = self.do_debug.usage
        plain, script = False, None
        words = list(words)
        while words:
            word = words.pop(0)
            if word == "-n":
                plain = True
            elif word == "-f" and words:
                script = words.pop(0)
            else:
                raise CommandError(f"usage: {usage}")
        namespace: dict[str, Any] = {"self": self.core, "core": self.core, "shell": self,
                                     "lxml": lxml}
        if script is not None:
            self.run_script(script, namespace)
            return False
        banner = "The core is 'self'; Ctrl-D goes back to bcfg2-info."
        if not plain:
            try:
                import IPython  # type: ignore[import-not-found]
            except ImportError:
                pass
            else:
                IPython.embed(header=banner, user_ns=namespace, colors="neutral")
                return False
        try:
            code.interact(banner=banner, local=namespace, exitmsg="")
        except SystemExit:
            pass
        return False

    def run_script(self, path: str, namespace: dict[str, Any]) -> None:
        """Run a file of Python statements in the debug namespace; errors in one line."""
        try:
            with open(path, encoding="utf-8") as fh:
                source = fh.read()
        except OSError as err:
            raise CommandError(f"cannot read {path}: {err.strerror}") from None
        try:
            compiled = compile(source, path, "exec")
        except SyntaxError as err:
            raise CommandError(f"{path}:{err.lineno}: {err.msg}") from None
        try:
            exec(compiled, namespace)  # noqa: S102 - the admin's own script, by design
        except SystemExit:
            pass
        except Exception as err:
            logger.debug("%s failed", path, exc_info=True)
            lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
                     if f.filename == path]
            where = f"{path}:{lines[-1]}" if lines else path
            raise CommandError(f"{where}: {err.__class__.__name__}: {err}") from None

    @command("profile <command> [arguments...]", 1, None, complete=("command",))
    def do_profile(self, words: list[str]) -> bool:
        """Run a command under cProfile and show where its time went."""
        if words[0] == "profile":
            raise CommandError("profile cannot profile itself")
        profiler = cProfile.Profile()
        try:
            profiler.runcall(cmd.Cmd.onecmd, self, shlex.join(words))
        finally:
            self.out(profile_summary(profiler))
        return False


def profile_summary(profiler: cProfile.Profile, top: int = 25) -> str:
    """The top of a profile, by cumulative time."""
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    return stream.getvalue().strip("\n")
