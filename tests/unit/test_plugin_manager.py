"""The plugin manager: one registry, hooks checked at load, options declared by plugins."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from conftest import ROOT, make_setup

from bcfg2 import options
from bcfg2.core import LocalCore
from bcfg2.errors import ConfigError, CoreInitError
from bcfg2.options import Option
from bcfg2.plugin import ClientRunHooks, Connector, Plugin, Statistics, manager


def test_our_table_of_plugins_and_cores_is_the_entry_points_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert manager.BUILTIN_PLUGINS == project["bcfg2.plugins"]
    assert manager.BUILTIN_CORES == project["bcfg2.cores"]
    for name in manager.BUILTIN_PLUGINS:
        assert (ROOT / "plugins" / f"{name.lower()}.py").exists() or \
            (ROOT / "plugins" / name.lower()).is_dir()


@pytest.mark.parametrize("name", sorted(manager.BUILTIN_PLUGINS))
def test_every_plugin_of_ours_passes_the_checks(name):
    cls = manager.find_plugin(name)
    assert cls.name == name
    manager.check_plugin(cls)


@pytest.mark.parametrize("name", sorted(manager.BUILTIN_CORES))
def test_every_core_of_ours_is_found_by_name(name):
    assert manager.find_core(name).__name__ == manager.BUILTIN_CORES[name].split(":")[1]


def test_an_unknown_plugin_suggests_the_name_it_resembles():
    with pytest.raises(CoreInitError, match=r"no plugin named 'Bundlr' \(did you mean Bundler\?\)"):
        manager.find_plugin("Bundlr")
    with pytest.raises(CoreInitError, match=r"no plugin named 'Xyzzy'$"):
        manager.find_plugin("Xyzzy")


def test_an_unknown_core_is_a_one_line_error():
    with pytest.raises(CoreInitError, match="no core named 'nonesuch'"):
        manager.find_core("nonesuch")


class WrongArity(Plugin, Connector):
    def get_additional_groups(self, metadata: Any, extra: Any) -> list[str]:
        return []


class WrongName(Plugin, Connector):
    def get_additional_data(self, meta: Any) -> dict[str, Any]:
        return {}


class Misspelt(Plugin, ClientRunHooks):
    def end_client_runs(self, metadata: Any) -> None:
        """Never called: the hook is end_client_run."""


class MisspeltUnclaimed(Plugin):
    def validate_structure(self, metadata: Any, structures: Any) -> None:
        """One edit away from StructureValidator.validate_structures."""


class Fine(Plugin, Connector, ClientRunHooks):
    """Overrides hooks as the interfaces declare them; extras with defaults are fine."""

    def get_additional_groups(self, metadata: Any, verbose: bool = False) -> list[str]:
        return []

    def end_client_run(self, metadata: Any) -> None:
        pass

    def end_statistics(self, *args: Any) -> None:
        pass

    def describe(self) -> str:  # far from every hook name
        return "fine"


@pytest.mark.parametrize(("cls", "method", "hook"), [
    (WrongArity, "get_additional_groups(self, metadata: 'Any', extra: 'Any')",
     "Connector.get_additional_groups(self, metadata"),
    (WrongName, "get_additional_data(self, meta: 'Any')", "Connector.get_additional_data"),
])
def test_a_hook_with_the_wrong_signature_fails_to_load_naming_plugin_method_and_hook(
        repo, register, cls, method, hook):
    register(cls)
    with pytest.raises(CoreInitError) as info:
        LocalCore(make_setup(repo, server__plugins=f"Metadata,{cls.name}"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"plugin {cls.name}: method {method}")
    assert hook in message


@pytest.mark.parametrize(("cls", "method", "hook"), [
    (Misspelt, "end_client_runs", "ClientRunHooks.end_client_run"),
    (MisspeltUnclaimed, "validate_structure", "StructureValidator.validate_structures"),
])
def test_a_misspelt_hook_fails_to_load(repo, register, cls, method, hook):
    register(cls)
    with pytest.raises(CoreInitError) as info:
        LocalCore(make_setup(repo, server__plugins=f"Metadata,{cls.name}"))
    message = str(info.value)
    assert "\n" not in message
    assert f"plugin {cls.name}: method {method}" in message and hook in message


def test_hooks_as_declared_load(repo, register):
    register(Fine)
    core = LocalCore(make_setup(repo, server__plugins="Metadata,Fine"))
    try:
        assert isinstance(core.plugins["Fine"], Fine)
    finally:
        core.shutdown()


def test_one_edit_apart():
    assert manager._one_edit_apart("end_client_runs", "end_client_run")
    assert manager._one_edit_apart("GetProbse", "GetProbes")  # a swap
    assert manager._one_edit_apart("HandleEntry", "HandleEntrx")
    assert not manager._one_edit_apart("HandleEntry", "HandleEntry")
    assert not manager._one_edit_apart("HandleEntry", "HandlesEntr")


class Greeter(Plugin, Connector):
    options = (Option("greeter", "greeting", "hello", "What the plugin says."),
               Option("greeter", "times", 1, "How often.", type="int"))


class Clash(Statistics):
    options = (Option("greeter", "greeting", "hi", "The same option again."),)

    def process_statistics(self, metadata: Any, data: Any) -> None:
        pass


def test_a_plugins_options_join_the_table_when_it_is_used(tmp_path, register):
    register(Greeter)
    conf = tmp_path / "bcfg2.conf"
    conf.write_text("[server]\nplugins = Metadata, Greeter\n[greeter]\ntimes = 3\n")
    setup = options.load(["-C", str(conf)])
    assert (setup.greeter.greeting, setup.greeter.times) == ("hello", 3)
    setup = options.load(["-C", str(conf), "--greeter-greeting", "hola"])
    assert setup.greeter.greeting == "hola"
    conf.write_text("[server]\nplugins = Metadata, Greeter\n[greeter]\ntimes = often\n")
    with pytest.raises(ConfigError, match=r"\[greeter\] times: 'often' is not an integer"):
        options.load(["-C", str(conf)])
    # a plugin that is not used adds nothing
    conf.write_text("[server]\nplugins = Metadata\n")
    assert not hasattr(options.load(["-C", str(conf)]), "greeter")


def test_two_plugins_declaring_one_option_is_an_error_naming_both(tmp_path, register):
    register(Greeter, Clash)
    with pytest.raises(ConfigError, match="declared by plugin Greeter and by plugin Clash"):
        options.build("/dev/null", {"server.plugins": "Metadata,Greeter,Clash"})


def test_help_and_the_example_show_every_plugins_options(register, capsys):
    register(Greeter)
    text = options.example()
    assert "[greeter]" in text and "#greeting = hello" in text
    assert "--greeter-greeting" in text
    with pytest.raises(SystemExit):
        options.load(["--help"])
    out = capsys.readouterr().out
    assert "--greeter-greeting" in out and "--probes-allowed-groups" in out
