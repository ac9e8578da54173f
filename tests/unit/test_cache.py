"""The metadata cache: its modes, expiry by client, set, predicate or change, and its listeners."""

from __future__ import annotations

import pytest

from bcfg2.cache import Expiry, MetadataCache
from bcfg2.metadata import ClientMetadata, MetadataQuery


def meta(name: str, groups: set[str], profile: str = "basic") -> ClientMetadata:
    return ClientMetadata(name, profile, groups | {profile}, set(), (), (), {}, None, None, None,
                          MetadataQuery())


@pytest.fixture
def cache() -> MetadataCache:
    cache = MetadataCache("aggressive")
    for name in ("a", "b", "c"):
        assert cache.store(name, meta(name, {"web"}), cache.generation)
    return cache


def heard(cache: MetadataCache) -> list[Expiry]:
    expiries: list[Expiry] = []
    cache.subscribe(expiries.append)
    return expiries


def test_on_means_cautious_and_an_unknown_mode_is_refused():
    assert MetadataCache("on").mode == "cautious"
    with pytest.raises(ValueError):
        MetadataCache("sometimes")


def test_off_keeps_nothing():
    cache = MetadataCache("off")
    assert cache.store("a", meta("a", set()), cache.generation) is False
    assert cache.get("a") is None


def test_a_value_built_before_an_expiry_is_not_stored_after_it(cache):
    generation = cache.generation
    cache.expire("z", tag="Probes")  # whoever, whatever: a change happened meanwhile
    assert cache.store("d", meta("d", set()), generation) is False
    assert "d" not in cache


def test_expire_one_several_or_all_and_each_is_heard_once(cache):
    expiries = heard(cache)
    cache.expire("a", tag="Probes")
    assert cache.clients() == ["b", "c"]
    cache.expire(["b", "x"], tag="Metadata")
    assert cache.clients() == ["c"]
    cache.expire(tag="admin")
    assert len(cache) == 0
    assert [(e.clients, e.tag) for e in expiries] == [
        (frozenset({"a"}), "Probes"), (frozenset({"b", "x"}), "Metadata"), (None, "admin")]
    generations = [e.generation for e in expiries]
    assert generations == sorted(generations) and generations[-1] == cache.generation


def test_expire_where_forgets_those_the_predicate_names(cache):
    expiries = heard(cache)
    assert cache.expire_where(lambda name, value: name != "b", tag="GroupPatterns") == {"a", "c"}
    assert cache.clients() == ["b"]
    assert expiries[-1].clients == {"a", "c"} and expiries[-1].tag == "GroupPatterns"


def test_a_predicate_that_fails_expires_its_client(cache):
    def predicate(name: str, value: ClientMetadata) -> bool:
        if name == "a":
            raise KeyError(name)
        return False

    assert cache.expire_where(predicate) == {"a"}


def test_expire_changed_rebuilds_and_expires_exactly_the_clients_whose_groups_change(cache):
    cache.bind(lambda name: meta(name, {"db"} if name == "b" else {"web"}), lambda imd: imd)
    expiries = heard(cache)
    generation = cache.generation
    assert cache.expire_changed(tag="Metadata") == {"b"}
    assert cache.clients() == ["a", "c"]
    assert cache.generation > generation
    # even with no change, the generation moves: a build racing the change is not stored
    generation = cache.generation
    assert cache.expire_changed(tag="Metadata") == frozenset()
    assert cache.generation == generation + 1
    assert [e.clients for e in expiries] == [{"b"}, frozenset()]


def test_a_profile_change_is_a_change(cache):
    cache.bind(lambda name: meta(name, {"web"}, profile="other" if name == "c" else "basic"),
               lambda imd: imd)
    assert cache.expire_changed() == {"c"}


@pytest.mark.parametrize(("mode", "expired"), [("cautious", True), ("aggressive", False),
                                                ("initial", False), ("off", False)])
def test_cautious_mode_starts_a_run_with_fresh_metadata(mode, expired):
    cache = MetadataCache(mode)
    cache.store("a", meta("a", set()), cache.generation)
    for method in ("GetProbes", "RecvProbeData"):
        cache.store("a", meta("a", set()), cache.generation)
        cache.before_call(method, "a")
        assert (cache.get("a") is None) is (expired or mode == "off")
    cache.store("a", meta("a", set()), cache.generation)
    cache.before_call("GetConfig", "a")
    assert (cache.get("a") is None) is (mode == "off")


def test_a_failing_listener_does_not_stop_the_others(cache):
    def broken(expiry: Expiry) -> None:
        raise RuntimeError("broken")

    cache.subscribe(broken)
    expiries = heard(cache)
    cache.expire("a")
    assert len(expiries) == 1 and "a" not in cache


def test_at_generation_sees_no_expiry_meanwhile(cache):
    seen: list[int] = []
    cache.at_generation(seen.append)
    assert seen == [cache.generation]


def test_an_expiry_relayed_twice_keeps_the_tag_of_its_maker() -> None:
    """A parent relays to its children what another server made: still that plugin's."""
    from bcfg2.cache import relayed

    cache = MetadataCache("aggressive")
    heard = []
    cache.subscribe(heard.append)
    cache.expire("c1", tag=relayed(relayed("Metadata")))
    assert heard[0].relayed_from("Metadata") and heard[0].relayed
    cache.expire("c1", tag="Metadata")
    assert not heard[1].relayed
