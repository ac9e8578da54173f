"""The multiprocessing core: configurations are rendered in child processes.

The parent is the builtin core: it accepts connections, authenticates,
checks ACLs and answers every call itself except ``GetConfig``, which it
hands, by client name, to the next idle ``ChildCore``. Each child is a full
core in a process of its own (started fresh, not forked) that loads the
repository and keeps it current with its own file monitor; before rendering
it handles every change the kernel has already reported, so a change made
before a request (by an admin or by the parent, e.g. a new client) is seen.

Parent and child talk over two pipes: ``rpc`` carries one request and its
answer at a time (``rpc(child, method, ...)``), ``control`` carries one-way
messages to every child (``publish(method, ...)``: cache expiry, debug). A
child that dies is replaced; the request it held is retried once on another
child, then answered with a Fault, so no request hangs.

Every expiry of the parent's metadata cache is published with the parent's
cache generation, and each render names the generation it needs: a child
renders only once it has applied every expiry up to it, so a GetConfig right
after a RecvProbeData never sees the metadata from before it.

The parent keeps what the children hand it (``bcfg2.configcache``): a child
says which key and tokens it kept a configuration under, and the parent
keeps it under the same key, worked out from its own metadata, then serves
it again without asking a child, at what the builtin core's cache costs.
This holds only with a monitor that is told of changes (inotify): a child
handles every change the parent saw before a request, so what it built
then is at least as new as the parent's view, and a change the parent
handles meanwhile refuses it (the cache's generation check). The parent's
file events and metadata expiries drop what they drop in a child, and,
since the parent builds nothing for a plugin to compare its names with
(Rules says which rules changed by comparing), a file event drops every
configuration that recorded a name of the plugin whose directory it is in.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from typing import Any
from xmlrpc.client import Fault

from bcfg2 import configcache, metrics
from bcfg2.cache import Expiry, relayed
from bcfg2.core import Core, exposed
from bcfg2.cores.builtin import BuiltinCore
from bcfg2.errors import CriticalError, MetadataConsistencyError, MetadataRuntimeError
from bcfg2.logger import reopen_logs, setup_logging
from bcfg2.options import Option, Setup
from bcfg2.xml import tostring
from bcfg2.xmlrpc import fault_for

logger = logging.getLogger("bcfg2.cores.multiprocessing")
CONTEXT = multiprocessing.get_context("spawn")

#: seconds a request waits for an idle child (children start or restart meanwhile)
CHILD_WAIT = 120.0
#: seconds a child may take to load the repository and report ready
CHILD_START = 300.0
#: seconds a render waits for the parent's expiries to arrive (then all is expired)
SYNC_WAIT = 10.0


class ChildFailed(Exception):
    """A child died, stopped answering, or could not be had in time."""


class ChildCore(Core):
    """A full core in a child process, rendering the configurations the parent asks for."""

    name = "child"
    worker = True

    def __init__(self, child_name: str, setup: Setup, rpc: Any, control: Any) -> None:
        self.child_name = child_name
        self.rpc = rpc
        self.control = control
        #: the parent's cache generation whose expiries have all been applied here
        self.parent_generation = 0
        self._synced = threading.Condition()
        super().__init__(setup)
        self.child_methods = {
            "GetConfig": self.render,
            "get_statistics": lambda: self.get_statistics(None),
            "expire": self.apply_expiry,
            "sync": self.apply_expiry,
            "expire_plugin_caches": self.expire_plugin_caches,
            "set_debug": lambda debug: self.set_debug(None, debug),
            "reopen_logs": reopen_logs,
        }

    def apply_expiry(self, generation: int, clients: list[str] | None = (),
                     tag: str = "") -> None:
        """Apply an expiry the parent made (``sync``: none, only where the parent stands)."""
        if clients is None or clients:
            self.metadata_cache.expire(clients, tag=relayed(tag))
        with self._synced:
            self.parent_generation = max(self.parent_generation, generation)
            self._synced.notify_all()

    def expire_plugin_caches(self, hostnames: list[str] | None) -> None:
        """The Caching plugins' part of an admin's expire_metadata_cache."""
        self.expire_plugins(hostnames)

    def render(self, client: str, generation: int = 0
               ) -> tuple[bytes, str | None, frozenset[str] | None]:
        """The configuration of a client, once the parent's expiries up to ``generation``
        and every repository change already reported are applied; compressed
        (``configcache.compress``): a tenth of the bytes through the pipe, and a kept
        configuration is sent as the cache holds it. With it, the key and tokens it is
        kept under here (None, None: it is not), for the parent to keep it as well."""
        with self._synced:
            if not self._synced.wait_for(lambda: self.parent_generation >= generation,
                                         SYNC_WAIT):
                self.logger.warning("%s: expiries up to generation %d did not arrive in "
                                    "%.0f s; expiring all cached metadata", self.child_name,
                                    generation, SYNC_WAIT)
                self.metadata_cache.expire(tag="sync timeout")
        self.catch_up()
        try:
            meta = self.build_metadata(client)
        except MetadataConsistencyError:  # its error document, logged
            return configcache.compress(tostring(self.BuildConfiguration(client))), None, None
        served = self.serve(client, meta)
        return served.compressed(), served.key, served.tokens

    def _run(self) -> bool:
        threading.Thread(target=self._control_loop, name="control", daemon=True).start()
        return True

    def _block(self) -> None:
        """Answer the parent's requests until it goes away or says stop."""
        self.rpc.send(("ready", os.getpid()))
        while not self.terminate.is_set():
            try:
                request = self.rpc.recv()
            except (EOFError, OSError):
                return  # the parent closed the pipe: shut down
            method, args = request
            try:
                answer: tuple[str, Any] = ("ok", self.child_methods[method](*args))
            except Exception as err:
                if not isinstance(err, Fault | CriticalError):
                    self.logger.exception("%s: %s failed", self.child_name, method)
                    err = CriticalError(str(err))
                fault = fault_for(err)
                answer = ("fault", (fault.faultCode, fault.faultString))
            try:
                self.rpc.send((*answer, metrics.drain()))
            except (OSError, ValueError):
                return

    def _control_loop(self) -> None:
        while True:
            try:
                method, args = self.control.recv()
            except (EOFError, OSError):
                method, args = "stop", ()
            if method == "stop":
                self.terminate.set()
                return
            try:
                self.child_methods[method](*args)
            except Exception:
                self.logger.exception("%s: published %s failed", self.child_name, method)


def child_main(child_name: str, setup: Setup, rpc: Any, control: Any) -> None:
    """Entry point of a child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the children in order
    setup_logging(setup, console=not setup.daemon, prog=f"bcfg2-server[{child_name}]")
    metrics.relay_to_parent()
    setup.daemon = None
    try:
        core = ChildCore(child_name, setup, rpc, control)
    except Exception as err:
        logging.getLogger("bcfg2.cores.multiprocessing").error(
            "%s could not start: %s", child_name, err)
        rpc.send(("failed", str(err)))
        return
    core.run()


class Child:
    """The parent's handle on one child process."""

    def __init__(self, name: str, process: Any, rpc: Any, control: Any) -> None:
        self.name = name
        self.process = process
        self.rpc = rpc
        self.control = control
        #: one request at a time on the rpc pipe
        self.lock = threading.Lock()
        self.control_lock = threading.Lock()
        self.ready = False

    def close(self) -> None:
        for conn in (self.rpc, self.control):
            try:
                conn.close()
            except OSError:
                pass


class MultiprocessingCore(BuiltinCore):
    """The builtin core with GetConfig rendered by a pool of child processes."""

    name = "bcfg2-server (multiprocessing)"
    renders = False
    options = (
        Option("server", "children", 0,
               "Number of child processes rendering configurations in the multiprocessing "
               "core; 0 means one per CPU.", type="int"),
        Option("server", "shutdown_timeout", 10.0,
               "Seconds the multiprocessing core gives its children to stop before killing "
               "them.", type="float"),
    )

    def __init__(self, setup: Setup) -> None:
        # before the core loads plugins: a failed start shuts down what exists so far
        self.shutdown_timeout = setup.server.shutdown_timeout
        self.pool_size = setup.server.children or os.cpu_count() or 1
        self.children: dict[str, Child] = {}
        #: names of idle children; a name whose child is gone is skipped
        self.available: queue.Queue[str] = queue.Queue()
        self._names = itertools.count(1)
        self._children_lock = threading.Lock()
        self._stopping = False
        self._watch_r, self._watch_w = os.pipe()
        self._watcher: threading.Thread | None = None
        #: whether configurations the children built are kept and served here
        self.keeps_configurations = False
        super().__init__(setup)
        self.keeps_configurations = self.config_cache.enabled and self.fam.blocking
        self.metadata_cache.subscribe(self._publish_expiry)
        metrics.watch_children(self.alive)

    def _publish_expiry(self, expiry: Expiry) -> None:
        """Every expiry of the parent's cache goes to every child, with its generation."""
        clients = None if expiry.clients is None else sorted(expiry.clients)
        self.publish("expire", expiry.generation, clients, expiry.tag)

    def fds(self) -> list[int]:
        return [*super().fds(), self._watch_r, self._watch_w]

    # -- what the children built, kept here ----------------------------------------

    def _file_changed(self, event: Any) -> None:
        """Also drop every configuration that recorded a name of the plugin whose directory
        holds the path (all plugins, outside their directories): a child's plugin says which
        of its names changed by comparing with what it built, and nothing is built here."""
        super()._file_changed(event)
        if self.keeps_configurations:
            self.config_cache.invalidate_owned(self._owners_of(event.path), self.plugins)

    def _owners_of(self, path: str) -> list[str]:
        for plugin in self.plugins.values():
            if path == plugin.data or path.startswith(plugin.data + os.sep):
                return [plugin.name]
        return list(self.plugins)

    def _kept_here(self, client: str) -> tuple[str | None, bytes | None]:
        """The client's configuration key here and the configuration kept under it, if any;
        (None, None) when its metadata or key cannot be worked out (a child answers as it
        always does)."""
        try:
            metadata = self.build_metadata(client)
            key, kept = self.kept_configuration(client, metadata)
        except (MetadataConsistencyError, MetadataRuntimeError):
            return None, None
        except Exception:  # a plugin's cache_key failed: the child's build reports it
            logger.exception("Looking up the kept configuration of %s failed", client)
            return None, None
        return key, None if kept is None else kept[0]

    # -- the pool --------------------------------------------------------------

    def unavailable(self) -> str | None:
        """Also unavailable while no child has loaded the repository."""
        why = super().unavailable()
        if why is None and not any(child.ready for child in self.pool()):
            return "loading the repository (no child process is ready)"
        return why

    def _run(self) -> bool:
        if not self._start_side_listeners():  # answers 503 while the children load the repository
            return False
        for _ in range(self.pool_size):
            self._start_child()
        self._watcher = threading.Thread(target=self._watch_children, name="children",
                                         daemon=True)
        self._watcher.start()
        return super()._run()

    def alive(self) -> int:
        """How many children have loaded the repository and are still running."""
        return sum(1 for child in self.pool() if child.ready and child.process.is_alive())

    def pool(self) -> list[Child]:
        """The children now in the pool (a snapshot: the watcher replaces dead ones)."""
        with self._children_lock:
            return list(self.children.values())

    def _start_child(self) -> Child:
        name = f"child-{next(self._names)}"
        parent_rpc, child_rpc = CONTEXT.Pipe()
        child_control, parent_control = CONTEXT.Pipe(duplex=False)
        process = CONTEXT.Process(target=child_main, name=name, daemon=True,
                                  args=(name, self.setup, child_rpc, child_control))
        process.start()
        child_rpc.close()
        child_control.close()
        child = Child(name, process, parent_rpc, parent_control)

        def register(generation: int) -> None:
            # no expiry can be published meanwhile: the child hears each one after
            # this, or starts with an empty cache from before it
            with self._children_lock:
                self.children[name] = child
            self._send(child, "sync", generation)

        self.metadata_cache.at_generation(register)
        self._notify_watcher()
        threading.Thread(target=self._await_ready, args=(child,), name=f"{name}-start",
                         daemon=True).start()
        return child

    def _await_ready(self, child: Child) -> None:
        """Put a child in the pool once it has loaded the repository."""
        try:
            if not child.rpc.poll(CHILD_START):
                raise ChildFailed(f"not ready after {CHILD_START:.0f} s")
            status, detail = child.rpc.recv()
        except (EOFError, OSError, ChildFailed) as err:
            if not self._stopping:
                logger.error("%s did not start: %s", child.name, err)
            self._discard(child)
            return
        if status != "ready":
            logger.error("%s failed to start: %s", child.name, detail)
            self._discard(child)
            return
        child.ready = True
        logger.info("%s (pid %s) is ready", child.name, detail)
        self.available.put(child.name)

    def _watch_children(self) -> None:
        """Replace a child that dies, whether it was busy or idle."""
        while not self._stopping:
            with self._children_lock:
                sentinels = {child.process.sentinel: child for child in self.children.values()}
            ready = multiprocessing.connection.wait([*sentinels, self._watch_r])
            if self._watch_r in ready:
                os.read(self._watch_r, 4096)
            for sentinel in ready:
                child = sentinels.get(sentinel)
                if child is not None and not self._stopping:
                    self._replace(child, "exited")

    def _notify_watcher(self) -> None:
        try:
            os.write(self._watch_w, b"x")
        except OSError:
            pass

    def _discard(self, child: Child) -> bool:
        """Forget a child (and end its process); False if it was already forgotten."""
        with self._children_lock:
            if self.children.get(child.name) is not child:
                return False
            del self.children[child.name]
        child.close()
        if child.process.is_alive():
            child.process.kill()
        child.process.join(timeout=5)
        self._notify_watcher()
        return True

    def _replace(self, child: Child, why: str) -> None:
        was_ready = child.ready
        if self._discard(child) and not self._stopping:
            logger.error("%s %s (exit code %s); starting a new child", child.name, why,
                         child.process.exitcode)
            if was_ready:
                self._start_child()

    # -- talking to children ---------------------------------------------------

    def rpc(self, child: Child, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call a method in one child and return its answer (a Fault is raised as is)."""
        with child.lock:
            try:
                child.rpc.send((method, args))
                if not child.rpc.poll(timeout):
                    raise ChildFailed(f"{child.name} did not answer {method} in {timeout} s")
                status, value, events = child.rpc.recv()
            except (EOFError, OSError, ValueError) as err:
                raise ChildFailed(f"{child.name} is gone ({err or type(err).__name__})") from None
        metrics.relay(events)  # the child is free for its next call meanwhile
        if status == "fault":
            raise Fault(*value)
        return value

    def publish(self, method: str, *args: Any) -> None:
        """Send a one-way call to every child (cache expiry, debug switches)."""
        for child in self.pool():
            self._send(child, method, *args)

    @staticmethod
    def _send(child: Child, method: str, *args: Any) -> None:
        with child.control_lock:
            try:
                child.control.send((method, args))
            except (OSError, ValueError):
                pass  # a dying child: the watcher replaces it

    def _take_child(self) -> Child:
        deadline = time.monotonic() + CHILD_WAIT
        while True:
            remaining = deadline - time.monotonic()
            try:
                name = self.available.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise ChildFailed(f"no child was free for {CHILD_WAIT:.0f} s") from None
            child = self.children.get(name)
            if child is not None and child.process.is_alive():
                return child

    def _render(self, client: str, generation: int
                ) -> tuple[bytes, str | None, frozenset[str] | None]:
        child = self._take_child()
        try:
            result = self.rpc(child, "GetConfig", client, generation)
        except ChildFailed:
            self._replace(child, "failed while rendering")
            raise
        except Fault:
            self.available.put(child.name)
            raise
        self.available.put(child.name)
        return result

    # -- exposed methods the children take part in -----------------------------

    @exposed
    def GetConfig(self, address: tuple[str, int]) -> configcache.Packed:  # noqa: N802
        """The client's configuration as kept here, else rendered in a child process.

        The parent registers a client on first contact (here, so the state
        is written by one process), and names the cache generation the child
        must have caught up with. The answer goes as it came, compressed, to
        an agent that accepts gzip.
        """
        self.catch_up()
        client = self.client_for(address)
        self.check_stored(client)  # expired here, so in the child before it renders
        try:
            self.metadata.get_initial_metadata(client)
        except (MetadataConsistencyError, MetadataRuntimeError) as err:
            self.critical_error(f"Client metadata resolution error for {client}", err)
        generation = self.metadata_cache.generation
        kept_generation = self.config_cache.generation  # before the key: see ConfigCache.store
        key = None
        if self.keeps_configurations:
            key, kept = self._kept_here(client)
            if kept is not None:
                return configcache.Packed(kept)
        for attempt in (1, 2):
            try:
                blob, built_key, tokens = self._render(client, generation)
            except ChildFailed as err:
                logger.error("Rendering %s failed (attempt %d): %s", client, attempt, err)
                continue
            if key is not None and built_key == key and tokens is not None:
                self.config_cache.store(client, key, blob, tokens, kept_generation)
            return configcache.Packed(blob)
        raise CriticalError(f"no child process could render the configuration of {client}")

    @exposed
    def expire_metadata_cache(self, address: tuple[str, int],
                              hostnames: list[str] | None = None) -> bool:
        """Expire cached metadata here and in every child, and every Caching plugin's cache."""
        super().expire_metadata_cache(address, hostnames)  # the cache publishes its part
        self.publish("expire_plugin_caches", hostnames)
        return True

    def reopen_logs(self) -> None:
        """Reopen the log files here and in every child."""
        super().reopen_logs()
        self.publish("reopen_logs")

    @exposed
    def set_debug(self, address: tuple[str, int], debug: bool | str) -> bool:
        """Set debug logging here and in every child."""
        flag = super().set_debug(address, debug)
        self.publish("set_debug", flag)
        return flag

    @exposed
    def get_statistics(self, address: tuple[str, int]) -> dict[str, Any]:
        """Execution-time statistics of the parent and of every idle child, merged."""
        merged: dict[str, list[float]] = {k: list(v) for k, v in
                                          super().get_statistics(address).items()}
        for child in self.pool():
            if not child.ready or not child.lock.acquire(blocking=False):
                continue  # busy rendering: its numbers arrive with the next call
            child.lock.release()
            try:
                stats = self.rpc(child, "get_statistics", timeout=5)
            except (ChildFailed, Fault):
                continue
            for key, (low, high, mean, count) in stats.items():
                if key not in merged:
                    merged[key] = [low, high, mean, count]
                    continue
                old = merged[key]
                total = old[3] + count
                merged[key] = [min(old[0], low), max(old[1], high),
                               (old[2] * old[3] + mean * count) / total, total]
        return {key: tuple(value) for key, value in merged.items()}

    # -- shutting down -----------------------------------------------------------

    def shutdown(self) -> None:
        """Stop serving, then stop the children (killing stragglers), then the core."""
        self.terminate.set()
        self._stop_serving()
        self._stop_children()
        super().shutdown()

    def _stop_children(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._notify_watcher()
        with self._children_lock:
            children = list(self.children.values())
            self.children.clear()
        for child in children:
            try:
                child.control.send(("stop", ()))
            except (OSError, ValueError):
                pass
            child.close()
        deadline = time.monotonic() + self.shutdown_timeout
        for child in children:
            child.process.join(timeout=max(deadline - time.monotonic(), 0))
        for child in children:
            if child.process.is_alive():
                logger.warning("%s did not stop in %.0f s; killing it", child.name,
                               self.shutdown_timeout)
                child.process.kill()
                child.process.join(timeout=5)
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        for fd in (self._watch_r, self._watch_w):
            try:
                os.close(fd)
            except OSError:
                pass


__all__ = ["ChildCore", "MultiprocessingCore"]
