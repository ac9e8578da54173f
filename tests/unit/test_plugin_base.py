"""The base Plugin: every plugin logs as bcfg2.plugins.<Name> and keeps its debug switch."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from conftest import PLUGINS, Repo

from bcfg2.core import LocalCore
from bcfg2.plugin import Debuggable, DirectoryBacked, Plugin


def test_every_example_plugin_logs_under_its_own_name_and_keeps_debug_on(
        example_repo: Repo, local_core: Callable[..., LocalCore],
        caplog: pytest.LogCaptureFixture) -> None:
    core = local_core(example_repo)
    assert set(PLUGINS.split(",")) <= set(core.plugins)
    for name, plugin in core.plugins.items():
        assert plugin.logger.name == f"bcfg2.plugins.{name}", name
        assert plugin.set_debug(True) is True
    # the repository changes under the plugins; their switches stay as the admin set them
    example_repo.write("Bundler/extra.xml", "<Bundle/>")
    example_repo.write("Rules/extra.xml", '<Rules priority="7"/>')
    core.refresh()
    with caplog.at_level(logging.INFO, logger="bcfg2"):
        for name, plugin in core.plugins.items():
            assert plugin.debug_flag, name
            plugin.debug_log(f"debug of {name}")
    assert {r.name for r in caplog.records if r.getMessage().startswith("debug of ")} == \
        {f"bcfg2.plugins.{name}" for name in core.plugins}


def test_a_helper_set_up_before_the_plugin_does_not_rename_it(tmp_path) -> None:
    class Late(Plugin, DirectoryBacked):
        def __init__(self, core: object) -> None:
            DirectoryBacked.__init__(self, str(tmp_path), _NoMonitor())
            self.set_debug(True)
            Plugin.__init__(self, core)  # type: ignore[arg-type]

    class Core:
        repository = str(tmp_path)

    plugin = Late(Core())
    assert plugin.logger.name == "bcfg2.plugins.Late"
    assert plugin.debug_flag
    assert Debuggable().logger.name == "bcfg2.Debuggable"


class _NoMonitor:
    def AddMonitor(self, path: str, obj: object) -> int:  # noqa: N802
        return 1
