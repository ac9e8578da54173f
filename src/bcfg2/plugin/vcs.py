"""Version plugins that ask a version-control tool for the repository's revision.

``run_vcs`` runs one command of such a tool the way a server must: no shell,
standard input closed and no controlling terminal (nothing can prompt for a
password), no pager, the C locale, a timeout after which the command and its
children are killed, and a bound on what it may print. ``VcsVersion`` is the
Version plugin built on it: it reads the revision at start-up, again when one
of the tool's own files changes (a commit, an update), and serves the last
revision read in between, so a configuration never waits for the tool.
"""

from __future__ import annotations

import os
import shutil
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from bcfg2.command import CommandError, run_bounded
from bcfg2.errors import PluginExecutionError, PluginInitError
from bcfg2.plugin.interfaces import Version
from bcfg2.untrusted import one_line

#: seconds a command that only reads (the revision) may take
READ_TIMEOUT = 30.0
#: bytes of standard output a command may print before it is refused (or cut, with ``truncate``)
MAX_OUTPUT = 1 << 20
#: bytes of standard error kept for the error message
MAX_ERROR = 4096

#: what every command runs with on top of the server's environment: no pager, no
#: colours, no terminal prompt (git), plain output (hg), English messages
QUIET_ENVIRONMENT: Mapping[str, str] = {
    "LC_ALL": "C", "LANG": "C", "LANGUAGE": "C",
    "PAGER": "cat", "GIT_PAGER": "cat", "DARCS_PAGER": "cat",
    "GIT_TERMINAL_PROMPT": "0",
    "HGPLAIN": "1", "DARCS_DONT_COLOR": "1", "TERM": "dumb",
}


class VcsCommandError(PluginExecutionError):
    """A version-control command failed, timed out or printed too much."""


def vcs_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment with ``QUIET_ENVIRONMENT`` (and ``extra``) on top."""
    env = dict(os.environ)
    env.update(QUIET_ENVIRONMENT)
    if extra:
        env.update(extra)
    return env


def run_vcs(argv: Sequence[str], cwd: str, *, timeout: float = READ_TIMEOUT,
            limit: int = MAX_OUTPUT, truncate: bool = False,
            env: Mapping[str, str] | None = None) -> str:
    """Run one version-control command in ``cwd``; return its standard output.

    The command runs in its own session (no controlling terminal) with
    standard input closed, so nothing it starts (ssh asking for a password
    or a host key) can prompt. After
    ``timeout`` seconds, or once standard output passes ``limit`` bytes, the
    whole process group is killed: a runaway is an error, unless
    ``truncate`` asks for the first ``limit`` bytes (for a tool that lists
    much more than the caller reads). A non-zero exit status is an error
    carrying the tool's first lines of standard error.
    """
    what = " ".join([os.path.basename(argv[0]), *argv[1:]])
    try:
        done = run_bounded(argv, cwd, timeout, limit, stderr_limit=MAX_ERROR,
                           truncate=truncate, env=vcs_environment(env))
    except CommandError as err:
        reason = str(err)
        if reason.startswith("ran longer"):
            reason = f"no answer within {timeout:g} s"
        elif reason.startswith("wrote more"):
            reason = f"printed more than {limit} bytes"
        raise VcsCommandError(f"{what}: {reason}") from None
    if done.status not in (None, 0):
        message = one_line(done.stderr.decode("utf-8", "replace").strip()) or "no message"
        raise VcsCommandError(f"{what} failed (exit status {done.status}): {message}")
    return done.stdout.decode("utf-8", "replace")


class VcsVersion(Version):
    """A Version plugin reading the revision through a version-control tool's command line.

    A subclass names the tool (``command``, the Debian ``package`` that
    installs it, what a checkout is called in ``kind``), reads the revision
    in ``read_revision`` and names the tool's files whose change means a new
    revision in ``watched_files``. With ``reread_always`` the revision is
    read again each time the core asks, which it does after every burst of
    repository changes (for a revision that follows edits, not only commits).
    """

    #: the tool's executable, looked up on ``PATH``
    command: ClassVar[str] = ""
    #: the Debian package that installs it, named when it is missing
    package: ClassVar[str] = ""
    #: what a working copy of the tool is called, for error messages
    kind: ClassVar[str] = ""
    #: read the revision whenever the core asks, not only when a watched file changes
    reread_always: ClassVar[bool] = False
    #: environment variables the tool needs on top of ``QUIET_ENVIRONMENT``
    environment: ClassVar[Mapping[str, str]] = {}

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.vcs_root: str = core.setup.server.vcs_root or core.repository
        executable = shutil.which(self.command)
        if executable is None:
            raise PluginInitError(f"the {self.command} command is not installed; install the "
                                  f"{self.package} package")
        self.executable = executable
        try:
            self.revision = self.read_revision()
            watched = self.watched_files()
        except VcsCommandError as err:
            raise PluginInitError(f"{self.vcs_root} is not in {self.kind} "
                                  f"([server] vcs_root): {err}") from None
        for path in watched:
            core.fam.AddMonitor(path, self)

    def vcs(self, *args: str, **kwargs: Any) -> str:
        """Run the tool with ``args`` in ``vcs_root`` (see ``run_vcs`` for ``kwargs``)."""
        return run_vcs([self.executable, *args], self.vcs_root,
                       env=self.environment, **kwargs)

    @abstractmethod
    def read_revision(self) -> str:
        """Ask the tool for the revision (raises ``VcsCommandError``)."""

    @abstractmethod
    def watched_files(self) -> list[str]:
        """Absolute paths of the tool's files that change with the revision."""

    def refresh_revision(self) -> None:
        """Read the revision again; on failure log why and keep the last one read."""
        try:
            revision = self.read_revision()
        except VcsCommandError as err:
            self.logger.error("Cannot read the %s revision: %s", self.name, err)
            return
        if revision != self.revision:
            self.logger.info("%s revision is now %s", self.name, revision)
            self.revision = revision

    def HandleEvent(self, event: Any) -> None:  # noqa: N802
        if event.action in ("exists", "endExist"):
            return
        self.refresh_revision()

    def get_revision(self) -> str:
        if self.reread_always:
            self.refresh_revision()
        return self.revision


__all__ = ["MAX_OUTPUT", "QUIET_ENVIRONMENT", "READ_TIMEOUT", "VcsCommandError", "VcsVersion",
           "run_vcs", "vcs_environment"]
