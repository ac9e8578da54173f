"""Running a program the repository names (an ENC, a version-control tool), bounded.

``run_bounded`` starts it without a shell, with standard input closed, in a
session of its own (no controlling terminal: nothing it starts can prompt
for a password), and reads both of its outputs at once. Past ``timeout``
seconds, or once an output passes its limit, the program and every process
it started are killed and the caller gets a CommandError saying which
limit it hit; with ``truncate`` standard output is cut at the limit
instead, for a program that lists far more than the caller reads.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CommandError", "Completed", "run_bounded"]

#: bytes read from a program's output at a time
CHUNK = 65536


class CommandError(Exception):
    """The program could not start, ran too long or wrote too much (and was killed)."""


@dataclass(frozen=True)
class Completed:
    """A program that ran: its exit status (None if cut off with ``truncate``) and outputs."""

    status: int | None
    stdout: bytes
    stderr: bytes


def run_bounded(argv: Sequence[str], cwd: str, timeout: float, limit: int, *,
                stderr_limit: int | None = None, truncate: bool = False,
                env: Mapping[str, str] | None = None) -> Completed:
    """Run ``argv`` in ``cwd`` within ``timeout`` seconds and ``limit`` bytes of output.

    ``stderr_limit``, if given, keeps that much of standard error and drops
    the rest silently (for messages); otherwise standard error is bounded by
    ``limit`` like standard output.
    """
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=None if env is None else dict(env), start_new_session=True)
    except OSError as err:
        raise CommandError(f"cannot be run: {err.strerror or err}") from None
    assert proc.stdout is not None and proc.stderr is not None
    out, err_text = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    cut = finished = False
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, (out, "standard output"))
            selector.register(proc.stderr, selectors.EVENT_READ, (err_text, "standard error"))
            while selector.get_map() and not cut:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandError(f"ran longer than {timeout:g} s and was killed")
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                        continue
                    buffer, stream = key.data
                    if buffer is err_text and stderr_limit is not None:
                        buffer += chunk[:max(0, stderr_limit - len(buffer))]
                        continue
                    buffer += chunk
                    if len(buffer) > limit:
                        if not (truncate and buffer is out):
                            raise CommandError(f"wrote more than {limit} bytes to its {stream} "
                                               f"and was killed")
                        del buffer[limit:]
                        cut = True
                        break
        if not cut:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise CommandError(f"ran longer than {timeout:g} s and was killed") from None
            finished = True
    finally:
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the program and whatever it started
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return Completed(None if cut else proc.returncode, bytes(out), bytes(err_text))
