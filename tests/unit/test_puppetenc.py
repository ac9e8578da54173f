"""PuppetENC: ENC output as groups and template data; ENCs that fail, hang or flood."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import lxml.etree
import pytest
from conftest import Repo, pid_alive, wait_until

from bcfg2.core import LocalCore
from bcfg2.plugins.puppetenc import ENCError, parse_enc_output

Factory = Callable[..., LocalCore]
PLUGINS = "Metadata,Bundler,Cfg,Rules,Defaults,PuppetENC"

#: the ENC example of the Puppet (and Bcfg2) documentation
PUPPET_EXAMPLE = """\
---
classes:
    common:
    puppet:
    ntp:
        ntpserver: 0.pool.ntp.org
    aptsetup:
        additional_apt_repos:
            - deb localrepo.example.com/ubuntu lucid production
            - deb localrepo.example.com/ubuntu lucid vendor
parameters:
    ntp_servers:
        - 0.pool.ntp.org
        - ntp.example.com
    mail_server: mail.example.com
    iburst: true
environment: production
"""


def enc(repo: Repo, name: str, body: str, executable: bool = True) -> Path:
    path = repo.write(f"PuppetENC/{name}", "#!/bin/sh\n" + body)
    path.chmod(0o755 if executable else 0o644)
    return path


def prints(repo: Repo, name: str, yaml_text: str) -> Path:
    """An ENC that prints ``yaml_text``."""
    return enc(repo, name, f"cat <<'EOF'\n{yaml_text}EOF\n")


def test_the_documented_example_gives_groups_and_merged_parameters(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    prints(repo, "puppet-example", PUPPET_EXAMPLE)
    core = local_core(repo, server__plugins=PLUGINS)
    caplog.set_level(logging.WARNING)
    meta = core.build_metadata("client1")
    assert {"common", "puppet", "ntp", "aptsetup"} <= meta.groups
    assert meta.PuppetENC == {
        "additional_apt_repos": ["deb localrepo.example.com/ubuntu lucid production",
                                 "deb localrepo.example.com/ubuntu lucid vendor"],
        "iburst": True,
        "mail_server": "mail.example.com",
        "ntp_servers": ["0.pool.ntp.org", "ntp.example.com"],
        "ntpserver": "0.pool.ntp.org",
    }
    assert "puppet-example for client1 gives an environment" in caplog.text


def test_parameters_of_several_encs_merge_shallowly_and_groups_may_be_a_list(
        repo: Repo, local_core: Factory) -> None:
    prints(repo, "10-ntp", "parameters:\n  ntp_servers: [0.pool.ntp.org, ntp1.example.com]\n"
                           "  shared: first\n")
    prints(repo, "20-mail", "groups: [mailers, relay]\n"
                            "parameters:\n  mail_servers: [mail.example.com]\n  shared: second\n")
    core = local_core(repo, server__plugins=PLUGINS)
    meta = core.build_metadata("client1")
    assert {"mailers", "relay"} <= meta.groups
    assert meta.PuppetENC == {"ntp_servers": ["0.pool.ntp.org", "ntp1.example.com"],
                              "mail_servers": ["mail.example.com"], "shared": "second"}


def test_the_enc_gets_the_host_name_as_its_argument(repo: Repo, local_core: Factory) -> None:
    enc(repo, "byhost", 'echo "classes: [\\"for-$1\\"]"\necho "parameters: {argc: $#}"\n')
    core = local_core(repo, server__plugins=PLUGINS)
    assert "for-client2" in core.build_metadata("client2").groups
    assert core.build_metadata("client2").PuppetENC == {"argc": 1}


def test_encs_run_once_per_client_run(repo: Repo, local_core: Factory, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    enc(repo, "count", f'echo "$1" >> {runs}\necho "classes: [counted]"\n')
    core = local_core(repo, server__plugins=PLUGINS)
    for _ in range(3):
        assert "counted" in core.build_metadata("client1").groups
    assert runs.read_text().splitlines() == ["client1"]
    core.BuildConfiguration("client1")  # the run ends: the answers are forgotten
    core.build_metadata("client1")
    assert runs.read_text().splitlines() == ["client1", "client1"]
    core.plugins["PuppetENC"].expire_cache("client1")  # as an admin's PuppetENC.expire_cache
    core.build_metadata("client1")
    assert runs.read_text().splitlines() == ["client1"] * 3


def test_aggressive_caching_is_warned_about_at_start_up(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    local_core(repo, server__plugins=PLUGINS, caching__client_metadata="aggressive")
    assert "PuppetENC cannot tell when an ENC's answer changes" in caplog.text


def test_with_aggressive_caching_a_changed_answer_is_seen_at_the_next_run(
        repo: Repo, local_core: Factory) -> None:
    prints(repo, "role", "classes: [before]\n")
    core = local_core(repo, server__plugins=PLUGINS, caching__client_metadata="aggressive")
    assert "before" in core.build_metadata("client1").groups
    prints(repo, "role", "classes: [after]\n")
    assert "before" in core.build_metadata("client1").groups  # kept, as aggressive says
    core.BuildConfiguration("client1")
    groups = core.build_metadata("client1").groups
    assert "after" in groups and "before" not in groups


def test_a_hanging_enc_is_killed_and_the_others_still_count(
        repo: Repo, local_core: Factory, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    pidfile = tmp_path / "pid"
    enc(repo, "hang", f"sleep 300 &\necho $! > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}\n"
                      "wait\n")
    prints(repo, "good", "classes: [fine]\n")
    core = local_core(repo, server__plugins=PLUGINS, puppetenc__timeout="1")
    caplog.set_level(logging.ERROR)
    start = time.monotonic()
    meta = core.build_metadata("client1")
    assert time.monotonic() - start < 15
    assert "fine" in meta.groups
    assert "ENC hang for client1 ran longer than 1 s and was killed" in caplog.text
    child = int(pidfile.read_text())
    # SIGKILL is delivered asynchronously: the child must be gone soon after, not at once
    wait_until(lambda: not pid_alive(child), 10, "the ENC's child to die with it")


def test_an_enc_printing_100_mb_is_cut_off(repo: Repo, local_core: Factory,
                                           caplog: pytest.LogCaptureFixture) -> None:
    enc(repo, "flood", "head -c 104857600 /dev/zero | tr '\\0' 'a'\n")
    prints(repo, "good", "classes: [fine]\n")
    core = local_core(repo, server__plugins=PLUGINS, puppetenc__max_output="65536")
    caplog.set_level(logging.ERROR)
    start = time.monotonic()
    meta = core.build_metadata("client1")
    assert time.monotonic() - start < 15
    assert "fine" in meta.groups
    assert "ENC flood for client1 wrote more than 65536 bytes to its standard output" \
        in caplog.text


@pytest.mark.parametrize("name, body, reason", [
    ("badyaml", "echo 'classes: [unclosed'\n", "did not print YAML"),
    ("notamap", "echo '- just\n- a list'\n", "printed a YAML list, not a mapping"),
    ("failing", "echo 'classes: [x]'\necho oops >&2\nexit 4\n", "exited with status 4: oops"),
    ("badgroup", "echo 'classes: [\"two words\"]'\n", "'two words' is not a group name"),
    ("badparams", "echo 'parameters: [1, 2]'\n", "'parameters' is not a mapping"),
])
def test_a_failing_enc_gives_nothing_and_is_logged_by_name(
        repo: Repo, local_core: Factory, caplog: pytest.LogCaptureFixture,
        name: str, body: str, reason: str) -> None:
    enc(repo, name, body)
    prints(repo, "good", "classes: [fine]\nparameters: {kept: 1}\n")
    core = local_core(repo, server__plugins=PLUGINS)
    caplog.set_level(logging.ERROR)
    meta = core.build_metadata("client1")
    assert "fine" in meta.groups and "x" not in meta.groups
    assert meta.PuppetENC == {"kept": 1}
    assert f"ENC {name} for client1 {reason}" in caplog.text
    assert core.BuildConfiguration("client1").tag == "Configuration"


def test_files_that_are_not_encs_are_not_run(repo: Repo, local_core: Factory,
                                             tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    enc(repo, "plain", f"touch {tmp_path / 'ran'}\n", executable=False)
    enc(repo, "backup~", f"touch {tmp_path / 'ran'}\n")
    enc(repo, ".hidden", f"touch {tmp_path / 'ran'}\n")
    core = local_core(repo, server__plugins=PLUGINS)
    caplog.set_level(logging.WARNING)
    core.build_metadata("client1")
    assert not (tmp_path / "ran").exists()
    assert "plain is not executable" in caplog.text


@pytest.mark.parametrize("hostname", ["bad name", "client1\n", "-x", "a/../b", "*"])
def test_a_name_that_is_no_host_name_runs_no_enc(repo: Repo, local_core: Factory,
                                                tmp_path: Path, hostname: str) -> None:
    enc(repo, "record", f"touch {tmp_path / 'ran'}\necho 'classes: [x]'\n")
    core = local_core(repo, server__plugins=PLUGINS)
    result = core.plugins["PuppetENC"].run_encs(hostname)
    assert result.groups == [] and not (tmp_path / "ran").exists()


def test_templates_cannot_change_what_other_builds_see(repo: Repo, local_core: Factory) -> None:
    prints(repo, "data", "parameters: {repos: [a, b]}\n")
    core = local_core(repo, server__plugins=PLUGINS)
    core.build_metadata("client1").PuppetENC["repos"].append("c")
    assert core.build_metadata("client1").PuppetENC == {"repos": ["a", "b"]}


def test_parse_enc_output_reads_class_parameters_and_empty_documents() -> None:
    assert parse_enc_output(b"") == ([], {}, False)
    assert parse_enc_output(b"classes: {web: {port: 80}, db: null}\n") == (
        ["web", "db"], {"port": 80}, False)
    with pytest.raises(ENCError, match="parameters of class web are not a mapping"):
        parse_enc_output(b"classes: {web: [80]}\n")
    with pytest.raises(ENCError, match="did not print YAML"):
        parse_enc_output(b"!!python/object/apply:os.system ['true']\n")


def test_an_agent_gets_the_enc_groups_and_data_in_its_configuration(
        repo: Repo, network_server) -> None:
    repo.write("Metadata/groups.xml", """\
        <Groups>
          <Group name="basic" profile="true" public="true"/>
          <Group name="other" profile="true"/>
          <Group name="mailers"><Bundle name="mail"/></Group>
        </Groups>""")
    repo.write("Bundler/mail.xml", '<Bundle><Path name="/etc/mailname"/></Bundle>')
    repo.write("Cfg/etc/mailname/mailname.genshi", "${metadata.PuppetENC['mail_server']}\n")
    enc(repo, "classify", 'if [ "$1" = client1 ]; then\n'
                          "  echo 'classes: [mailers]'\n"
                          "  echo 'parameters: {mail_server: mail.example.com}'\n"
                          "fi\n")
    server = network_server(repo, server__plugins=PLUGINS)
    config = lxml.etree.fromstring(server.proxy("uuid-client1", "pw1").GetConfig().encode())
    assert [b.get("name") for b in config.iter("Bundle")] == ["mail"]
    path = config.find(".//Path[@name='/etc/mailname']")
    assert path is not None and path.text == "mail.example.com\n"
    other = lxml.etree.fromstring(server.proxy("uuid-client2", "pw2").GetConfig().encode())
    assert [b.get("name") for b in other.iter("Bundle")] == []
