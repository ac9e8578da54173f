"""Dependency resolution: what the configuration of a client ends up listing."""

from __future__ import annotations

import dataclasses

import pytest

from bcfg2.plugins.packages.index import Index
from bcfg2.plugins.packages.resolver import View
from bcfg2.plugins.packages.sources import Source

BASE = Source(type="apt", url="http://mirror.invalid/debian", rawurl="", version="bookworm",
              components=("main",), arches=("amd64",), blacklist=frozenset(),
              whitelist=frozenset(), gpgkeys=(), client_options=(), recommended=False,
              essential=True, debsrc=False, priority=500, name="debian")


def source(**changes: object) -> Source:
    return dataclasses.replace(BASE, **changes)


def index(ptype: str = "deb") -> Index:
    """A small index: chains, alternatives, virtuals with one and several providers."""
    idx = Index(ptype)
    idx.add("base-files", essential=True, depends=[["libc6"]])
    idx.add("libc6", depends=[["libgcc-s1"]])
    idx.add("libgcc-s1")
    idx.add("app", depends=[["libfoo"], ["libbar"]])
    idx.add("libfoo", depends=[["libbaz"]])
    idx.add("libbar")
    idx.add("libbaz")
    idx.add("mailer", depends=[["default-mta", "mail-transport-agent"]])
    idx.add("exim4", provides=["mail-transport-agent"])
    idx.add("postfix", provides=["mail-transport-agent"])
    idx.add("webapp", depends=[["httpd"]])
    idx.add("apache2", provides=["httpd"])
    idx.add("nginx", provides=["httpd"])
    idx.add("single", depends=[["awk"]])
    idx.add("mawk", provides=["awk"])
    idx.add("tool", depends=[["missing-lib"]], recommends=[["tool-doc"]])
    idx.add("tool-doc")
    return idx


def resolve(names: list[str], src: Source = BASE, idx: Index | None = None,
            essential: bool = True) -> tuple[set[str], tuple[str, ...], tuple[str, ...]]:
    view = View([(src, idx or index())])
    initial = set(names) | (set(view.essential) if essential else set())
    result = view.resolve(initial)
    return set(result.packages), result.added, result.unknown


def test_a_chain_of_depends_is_followed_to_its_end() -> None:
    packages, added, _ = resolve(["app"], essential=False)
    assert packages == {"app", "libfoo", "libbar", "libbaz"}
    assert added == ("libbar", "libbaz", "libfoo")


def test_essential_packages_and_their_dependencies_join_every_set() -> None:
    packages, added, _ = resolve(["libbar"])
    assert {"base-files", "libc6", "libgcc-s1"} <= packages
    assert "base-files" in added or "base-files" in packages


def test_essential_false_leaves_them_out() -> None:
    view = View([(source(essential=False), index())])
    assert view.essential == ()


def test_an_alternative_without_a_provider_in_the_set_takes_the_first_that_exists() -> None:
    # default-mta does not exist; mail-transport-agent is virtual: its first provider
    packages, _, unknown = resolve(["mailer"], essential=False)
    assert packages == {"mailer", "exim4"}
    assert unknown == ()


def test_an_alternative_met_by_a_package_in_the_set_adds_nothing() -> None:
    packages, _, _ = resolve(["mailer", "postfix"], essential=False)
    assert packages == {"mailer", "postfix"}


def test_a_provider_added_by_an_unambiguous_dependency_meets_a_later_choice() -> None:
    idx = index()
    # "a-first" sorts before "z-last"; z-last needs postfix, a-first any MTA
    idx.add("a-first", depends=[["mail-transport-agent"]])
    idx.add("z-last", depends=[["postfix"]])
    packages, _, _ = resolve(["a-first", "z-last"], idx=idx, essential=False)
    assert "postfix" in packages and "exim4" not in packages


def test_a_virtual_with_one_provider_is_that_provider() -> None:
    packages, _, _ = resolve(["single"], essential=False)
    assert packages == {"single", "mawk"}


def test_a_virtual_with_several_providers_takes_the_one_in_the_set() -> None:
    packages, _, _ = resolve(["webapp", "nginx"], essential=False)
    assert packages == {"webapp", "nginx"}
    packages, _, _ = resolve(["webapp"], essential=False)
    assert packages == {"webapp", "apache2"}


def test_a_virtual_named_in_a_bundle_resolves_to_a_provider() -> None:
    packages, added, unknown = resolve(["httpd"], essential=False)
    assert packages == {"apache2"} and added == ("apache2",) and unknown == ()


def test_unknown_packages_are_reported_not_invented() -> None:
    packages, _, unknown = resolve(["tool", "no-such-package"], essential=False)
    assert unknown == ("missing-lib", "no-such-package")
    assert packages == {"tool"}


def test_recommends_are_followed_only_for_recommended_sources() -> None:
    packages, _, _ = resolve(["tool"], essential=False)
    assert "tool-doc" not in packages
    packages, _, _ = resolve(["tool"], src=source(recommended=True), essential=False)
    assert "tool-doc" in packages


def test_a_blacklisted_package_is_not_offered() -> None:
    packages, _, unknown = resolve(["app"], src=source(blacklist=frozenset({"libbaz"})),
                                   essential=False)
    assert "libbaz" not in packages and unknown == ("libbaz",)
    # a blacklisted provider leaves the choice to the others
    packages, _, _ = resolve(["webapp"], src=source(blacklist=frozenset({"apache2"})),
                             essential=False)
    assert packages == {"webapp", "nginx"}


def test_a_whitelist_offers_only_its_packages() -> None:
    packages, _, unknown = resolve(["app"], src=source(whitelist=frozenset({"app", "libfoo"})),
                                   essential=False)
    assert packages == {"app", "libfoo"}
    assert unknown == ("libbar", "libbaz")


def test_file_requires_resolve_through_file_provides() -> None:
    idx = Index("yum")
    idx.add("script", depends=[["/bin/sh"], ["libc.so.6()(64bit)"]])
    idx.add("bash", provides=["/bin/sh"])
    idx.add("glibc", provides=["libc.so.6()(64bit)"])
    packages, _, unknown = resolve(["script"], idx=idx, essential=False)
    assert packages == {"script", "bash", "glibc"} and unknown == ()


def test_package_groups_by_kind() -> None:
    idx = index("yum")
    idx.groups["web"] = {"mandatory": ["webapp"], "default": ["nginx"], "optional": ["tool"]}
    view = View([(BASE, idx)])
    assert view.group_members("web", "mandatory") == ["webapp"]
    assert view.group_members("web", "default") == ["webapp", "nginx"]
    assert view.group_members("web", "optional") == ["webapp", "nginx", "tool"]
    assert view.group_members("web", "all") == ["webapp", "nginx", "tool"]
    assert view.group_members("nope") is None


def test_the_first_source_wins_a_name_two_offer_and_gives_its_type() -> None:
    high = Index("deb")
    high.add("shared", version="2.0")
    low = Index("deb")
    low.add("shared", version="1.0", depends=[["only-low"]])
    low.add("only-low")
    view = View([(source(name="high"), high), (source(name="low", essential=False), low)])
    result = view.resolve({"shared"})
    assert result.packages == {"shared"}
    assert view.packages["shared"][0] == "2.0"
    assert view.part_of("only-low") == 1


def test_resolution_is_memoised_and_deterministic() -> None:
    view = View([(BASE, index())])
    first = view.resolve({"mailer", "webapp"})
    assert view.resolve(frozenset({"webapp", "mailer"})) is first
    again = View([(BASE, index())]).resolve({"webapp", "mailer"})
    assert again == first


@pytest.mark.parametrize("names", [["app"], ["mailer", "webapp", "tool"]])
def test_the_result_is_closed(names: list[str]) -> None:
    view = View([(BASE, index())])
    result = view.resolve(set(names) | set(view.essential))
    for name in result.packages:
        for alternatives in view.packages[name][2]:
            met = any(alt in result.packages or
                      any(p in result.packages for p in view.provides.get(alt, ()))
                      for alt in alternatives)
            assert met or alternatives[0] in result.unknown
