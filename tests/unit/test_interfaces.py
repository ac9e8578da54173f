"""The interfaces' read-only queries: defaults, our plugins' answers, and tools that ask
them (so a third-party Structure plugin works with bcfg2-info and bcfg2-test)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

import lxml.etree
import pytest
from conftest import Repo

from bcfg2 import plugins as plugin_package
from bcfg2.core import LocalCore
from bcfg2.errors import PluginExecutionError
from bcfg2.info import InfoShell
from bcfg2.metadata import ClientMetadata
from bcfg2.plugin import (
    INTERFACES,
    BundleInfo,
    GroupInfo,
    Metadata,
    Plugin,
    PropertyFiles,
    Structure,
)
from bcfg2.testrun import bundle_problem, find_bundle

Factory = Callable[..., LocalCore]


class BareMetadata(Metadata):
    """A Metadata plugin written before the queries: only the abstract methods."""

    def AuthenticateConnection(self, cert: Any, user: str, password: str,  # noqa: N802
                               address: tuple[str, int]) -> bool:
        return False

    def get_initial_metadata(self, client_name: str) -> Any:
        raise NotImplementedError

    def merge_additional_groups(self, imd: Any, groups: list[str]) -> None: ...
    def merge_additional_data(self, imd: Any, source: str, data: Any) -> None: ...

    def resolve_client(self, address: tuple[str, int], cleanup_cache: bool = False) -> str:
        return ""

    def set_profile(self, client: str, profile: str, address: Any) -> None: ...
    def set_version(self, client: str, version: str) -> None: ...


class BareStructure(Structure):
    name = "Bare"

    def BuildStructures(self, metadata: Any) -> list:  # noqa: N802
        return []


def test_the_queries_have_defaults_so_older_plugins_still_load() -> None:
    meta = BareMetadata()
    assert meta.list_clients() == [] and meta.list_groups() == []
    assert meta.resolve_name("anyone") is None
    structure = BareStructure()
    assert structure.list_bundles() == [] and structure.bundle_info("b") is None
    with pytest.raises(PluginExecutionError, match="Bare cannot build single bundles"):
        structure.render_bundle("b", None)  # type: ignore[arg-type]


def our_plugin_classes() -> list[type[Plugin]]:
    found = []
    for info in pkgutil.iter_modules(plugin_package.__path__):
        module = importlib.import_module(f"bcfg2.plugins.{info.name}")
        found += [obj for obj in vars(module).values() if isinstance(obj, type)
                  and issubclass(obj, Plugin) and obj.__module__ == module.__name__]
    return found


def test_our_plugins_implement_interface_methods_with_the_interfaces_parameter_names() -> None:
    wrong = []
    for cls in our_plugin_classes():
        for interface in (base for base in cls.__mro__ if base in INTERFACES):
            for name, spec in vars(interface).items():
                impl = getattr(cls, name, None)
                if name.startswith("_") or not inspect.isfunction(spec) or impl is spec:
                    continue
                want = list(inspect.signature(spec).parameters)
                got = list(inspect.signature(impl).parameters)
                if got[:len(want)] != want:
                    wrong.append(f"{cls.__name__}.{name}{tuple(got)}: "
                                 f"{interface.__name__} says {tuple(want)}")
    assert not wrong, "\n".join(wrong)


def test_the_metadata_plugin_answers_the_tools_queries(example_repo: Repo,
                                                       local_core: Factory) -> None:
    meta = local_core(example_repo).metadata
    groups = {group.name: group for group in meta.list_groups()}
    assert list(groups) == sorted(groups)
    declared = lxml.etree.parse(str(example_repo.path / "Metadata/groups.xml")).getroot()
    for el in declared.iter("Group"):
        if el.get("profile") == "true":
            assert groups[el.get("name")].profile
    assert all(isinstance(group, GroupInfo) for group in groups.values())
    clients = meta.list_clients()
    assert clients == sorted(clients) and meta.resolve_name(clients[0].upper()) == clients[0]
    assert meta.resolve_name("nosuch.example.com") is None


def test_bundler_answers_the_tools_queries(repo: Repo, local_core: Factory) -> None:
    repo.write("Bundler/base.xml", '<Bundle><Path name="/a"/>'
               '<Group name="other"><Path name="/b"/></Group></Bundle>')
    repo.write("Bundler/gen.xml.jinja2", '<Bundle><Path name="/{{ metadata.hostname }}"/>'
               "</Bundle>")
    broken = repo.write("Bundler/broken.xml", "<Bundle>")
    core = local_core(repo)
    bundler = core.plugins["Bundler"]
    assert bundler.list_bundles() == ["base", "broken", "gen"]
    assert bundler.bundle_info("base") == BundleInfo("base", str(repo.path / "Bundler/base.xml"))
    assert bundler.bundle_info("gen").template
    info = bundler.bundle_info("broken")
    assert not info.in_service and str(broken) in info.error
    assert bundler.bundle_info("nosuch") is None
    metadata = core.build_metadata("client1")  # profile basic: not in group other
    assert [el.get("name") for el in bundler.render_bundle("base", metadata)] == ["/a"]
    everything = bundler.render_bundle("base", metadata, resolve_conditionals=False)
    assert [el.get("name") for el in everything.iter("Path")] == ["/a", "/b"]
    assert bundler.render_bundle("gen", metadata)[0].get("name") == "/client1"
    with pytest.raises(PluginExecutionError, match="cannot be used"):
        bundler.render_bundle("broken", metadata)


def test_properties_answer_the_tools_queries(repo: Repo, local_core: Factory) -> None:
    repo.write("Properties/ntp.xml", '<Properties automatch="true"><Server>a</Server>'
               '<Group name="other"><Server>b</Server></Group></Properties>')
    repo.write("Properties/data.json", '{"x": 1}')
    core = local_core(repo, server__plugins="Metadata,Bundler,Properties")
    [plugin] = core.plugins_by_type(PropertyFiles)
    assert plugin.list_property_files() == ["data.json", "ntp.xml"]
    matched, automatch = plugin.match_property_file("ntp.xml", core.build_metadata("client2"))
    assert automatch and [el.text for el in matched] == ["a", "b"]
    for name in ("data.json", "nosuch.xml"):
        with pytest.raises(PluginExecutionError, match=name):
            plugin.match_property_file(name, core.build_metadata("client1"))


class Catalogue(Plugin, Structure):
    """A third-party structure plugin: its bundles exist only through the interface."""

    def BuildStructures(self, metadata: ClientMetadata) -> list[lxml.etree._Element]:  # noqa: N802
        return [self.render_bundle(name, metadata) for name in sorted(metadata.bundles)
                if name in self.list_bundles()]

    def list_bundles(self) -> list[str]:
        return ["base"]

    def bundle_info(self, bundle: str) -> BundleInfo | None:
        return BundleInfo(bundle) if bundle == "base" else None

    def render_bundle(self, bundle: str, metadata: ClientMetadata,
                      resolve_conditionals: bool = True) -> lxml.etree._Element:
        return lxml.etree.fromstring(f'<Bundle name="{bundle}"><Package name="'
                                     f'{metadata.hostname}-pkg"/></Bundle>')


def test_the_tools_work_with_a_third_party_structure_plugin(
        repo: Repo, local_core: Factory, register: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    register(Catalogue)
    core = local_core(repo, server__plugins="Metadata,Catalogue")
    shell = InfoShell(core)
    shell.stdout = sys.stdout
    shell.onecmd("bundles")
    shell.onecmd("buildbundle base client1")
    out = capsys.readouterr().out
    assert ["base", "Catalogue"] in [line.split() for line in out.splitlines()]
    assert 'name="client1-pkg"' in out
    assert shell.candidates("bundle", []) == ["base"]
    found = find_bundle(core, "base")
    assert found is not None and found[0] is core.plugins["Catalogue"]
    assert bundle_problem(core, "base", core.build_metadata("client1")).startswith("not built")
    assert bundle_problem(core, "nosuch", core.build_metadata("client1")) == "no such bundle"
