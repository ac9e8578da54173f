"""A multiprocessing child renders only once it has applied the parent's expiries.

The child runs in this process on real pipes, with the test as its parent:
the expiry is sent on the control pipe only after the render request, the
order in which a busy machine may deliver them.
"""

from __future__ import annotations

import multiprocessing
import threading

import lxml.etree
import pytest
from conftest import make_setup, probe_groups_repo

from bcfg2 import configcache
from bcfg2.cores import multiprocessing as multiprocessing_core
from bcfg2.cores.multiprocessing import ChildCore


@pytest.fixture
def child(repo, tmp_path):
    probe_groups_repo(repo)
    setup = make_setup(repo, caching__client_metadata="aggressive",
                       server__plugins="Metadata,Bundler,Cfg,Rules,Probes")
    parent_rpc, child_rpc = multiprocessing.Pipe()
    child_control, parent_control = multiprocessing.Pipe(duplex=False)
    core = ChildCore("child-test", setup, child_rpc, child_control)
    thread = threading.Thread(target=core.run, daemon=True)
    thread.start()
    assert parent_rpc.recv()[0] == "ready"
    yield core, parent_rpc, parent_control
    parent_control.send(("stop", ()))
    parent_rpc.close()
    thread.join(timeout=30)
    assert not thread.is_alive()


def rendered_bundles(rpc) -> set[str]:
    status, answer, _events = rpc.recv()  # and the events it relays (bcfg2.metrics)
    assert status == "ok", answer
    text = configcache.decompress(answer[0])  # the child sends it compressed
    return {b.get("name") for b in lxml.etree.fromstring(text.encode()).iter("Bundle")}


def test_a_render_waits_for_the_expiry_the_parent_made_before_it(child):
    core, rpc, control = child
    store = core.plugins["Probes"].store
    store.save("client1", {"role": "group:alpha"}, ["alpha"])
    rpc.send(("GetConfig", ("client1", 0)))
    assert "alpha" in rendered_bundles(rpc)  # now cached, aggressively
    # the parent stores new probe data and expires client1 (generation 1) ...
    store.save("client1", {"role": "group:beta"}, ["beta"])
    # ... and the render request overtakes the expiry
    rpc.send(("GetConfig", ("client1", 1)))
    control.send(("expire", (1, ["client1"], "Probes")))
    bundles = rendered_bundles(rpc)
    assert "beta" in bundles and "alpha" not in bundles


def test_a_child_started_late_syncs_to_the_parents_generation(child, caplog):
    core, rpc, control = child
    core.plugins["Probes"].store.save("client1", {"role": "group:alpha"}, ["alpha"])
    control.send(("sync", (41,)))
    rpc.send(("GetConfig", ("client1", 41)))
    assert "alpha" in rendered_bundles(rpc)
    assert core.parent_generation == 41
    assert "did not arrive" not in caplog.text  # it did not wait out SYNC_WAIT


def test_an_expiry_that_never_arrives_expires_everything_and_the_render_goes_on(
        child, monkeypatch, caplog):
    core, rpc, _control = child
    monkeypatch.setattr(multiprocessing_core, "SYNC_WAIT", 0.05)
    store = core.plugins["Probes"].store
    store.save("client1", {"role": "group:alpha"}, ["alpha"])
    rpc.send(("GetConfig", ("client1", 0)))
    assert "alpha" in rendered_bundles(rpc)
    store.save("client1", {"role": "group:beta"}, ["beta"])
    rpc.send(("GetConfig", ("client1", 7)))  # generation 7's expiry is lost
    bundles = rendered_bundles(rpc)
    assert "beta" in bundles and "alpha" not in bundles
    assert "expiries up to generation 7 did not arrive" in caplog.text
