"""A third-party plugin installed as a distribution: found by its entry point, its option
in --help, in the generated bcfg2.conf.example and in the config checks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, make_distribution

ACME = '''
from bcfg2.options import Option
from bcfg2.plugin import Connector, Plugin


class Acme(Plugin, Connector):
    """Puts every client in the group its [acme] greeting names."""

    options = (Option("acme", "greeting", "hello", "The group every client joins."),
               Option("acme", "retries", 3, "How often to retry.", type="int"))

    def get_additional_groups(self, metadata):
        return [self.core.setup.acme.greeting]
'''


@pytest.fixture
def site(tmp_path):
    """An environment in which the acme_bcfg2 distribution is installed."""
    make_distribution(tmp_path / "site", "acme_bcfg2", {"acme_bcfg2.py": ACME},
                      plugins={"Acme": "acme_bcfg2:Acme"})
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    return env


def run(env, *args: str, program: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(ROOT / ".venv/bin" / program)] if program else [sys.executable]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


def test_its_option_is_in_the_help_and_the_example(site):
    helped = run(site, "--help", program="bcfg2-server")
    assert helped.returncode == 0, helped.stderr
    assert "--acme-greeting" in helped.stdout and "[acme] greeting" in helped.stdout
    example = run(site, "-m", "bcfg2.options")
    assert example.returncode == 0, example.stderr
    assert "[acme]" in example.stdout and "#greeting = hello" in example.stdout


def test_a_bad_value_of_its_option_is_a_one_line_error(site, tmp_path, example_repo):
    conf = tmp_path / "bcfg2.conf"
    conf.write_text(f"[server]\nrepository = {example_repo.path}\n"
                    f"plugins = Metadata, Acme\n[acme]\nretries = often\n")
    done = run(site, "-C", str(conf), "clients", program="bcfg2-info")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"bcfg2-info: {conf}: [acme] retries: 'often' is not an integer"]


def test_it_loads_by_name_and_sees_its_option(site, tmp_path, example_repo):
    conf = tmp_path / "bcfg2.conf"
    conf.write_text(f"[server]\nrepository = {example_repo.path}\n"
                    f"plugins = Metadata, Acme\nstate_dir = {tmp_path / 'state'}\n"
                    "filemonitor = pseudo\n[acme]\ngreeting = wile-e-coyote\n")
    done = run(site, "-C", str(conf), "showclient", "web1.example.com", program="bcfg2-info")
    assert done.returncode == 0, done.stderr
    assert "wile-e-coyote" in done.stdout
    done = run(site, "-C", str(conf), "--acme-greeting", "road-runner", "showclient",
               "web1.example.com", program="bcfg2-info")
    assert "road-runner" in done.stdout and "wile-e-coyote" not in done.stdout


def test_a_third_party_core_is_chosen_by_name_and_an_unknown_one_is_one_line(tmp_path):
    make_distribution(tmp_path / "site", "quiet_core",
                      {"quiet_core.py": "from bcfg2.cores.builtin import BuiltinCore\n\n\n"
                                        "class QuietCore(BuiltinCore):\n    pass\n"},
                      cores={"quiet": "quiet_core:QuietCore"})
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    found = run(env, "-c", "from bcfg2.server import load_core; print(load_core('quiet'))")
    assert found.returncode == 0, found.stderr
    assert "quiet_core.QuietCore" in found.stdout
    done = run(env, "-m", "bcfg2.server", "-C", "/dev/null", "--backend", "nonesuch",
               "-Q", str(ROOT / "repo-example"), "-x", "pw")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "bcfg2-server: [server] backend: no core named 'nonesuch'"]
