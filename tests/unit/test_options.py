"""The options table: bcfg2.conf with upstream names, the command line, errors, the example."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from bcfg2 import options
from bcfg2.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

UPSTREAM_CONF = """\
[server]
repository = {repo}
plugins = Bundler,Cfg,
    Metadata, Rules
filemonitor = pseudo
listen_all = yes
user = bcfg2
group = bcfg2grp
umask = 0027
backend = builtin
vcs_root = {vcs}
fam_blocking = true

[components]
bcfg2 = https://bcfg2.example.com:6790

[communication]
password = s3cret
key = {tls}/server.key
certificate = {tls}/server.crt
ca = {tls}/ca.crt
protocol = xmlrpc/ssl

[caching]
client_metadata = aggressive

[logging]
path = {log}
syslog = off
debug = false
verbose = 1

[database]
engine = sqlite3
"""


def write_conf(tmp_path: Path, text: str, name: str = "bcfg2.conf") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def upstream_conf(tmp_path: Path) -> dict[str, str]:
    values = {
        "repo": str(tmp_path / "repo"),
        "vcs": str(tmp_path / "checkout"),
        "tls": str(tmp_path / "tls"),
        "log": str(tmp_path / "bcfg2-server.log"),
    }
    values["conf"] = str(write_conf(tmp_path, UPSTREAM_CONF.format(**values)))
    return values


def test_upstream_bcfg2_conf_is_read_with_its_section_and_option_names(upstream_conf):
    setup = options.load(["-C", upstream_conf["conf"]])

    assert setup.config_file == upstream_conf["conf"]
    assert setup.server.repository == upstream_conf["repo"]
    assert setup.server.plugins == ["Bundler", "Cfg", "Metadata", "Rules"]
    assert setup.server.filemonitor == "pseudo"
    assert setup.server.listen_all is True
    assert setup.server.user == "bcfg2"
    assert setup.server.group == "bcfg2grp"
    assert setup.server.umask == 0o027
    assert setup.server.backend == "builtin"
    assert setup.server.vcs_root == upstream_conf["vcs"]
    assert setup.components.bcfg2 == "https://bcfg2.example.com:6790"
    assert setup.communication.password == "s3cret"
    assert setup.communication.key == upstream_conf["tls"] + "/server.key"
    assert setup.communication.certificate == upstream_conf["tls"] + "/server.crt"
    assert setup.communication.ca == upstream_conf["tls"] + "/ca.crt"
    assert setup.communication.protocol == "xmlrpc/ssl"
    assert setup.caching.client_metadata == "aggressive"
    assert setup.logging.path == upstream_conf["log"]
    assert setup.logging.syslog is False
    assert setup.logging.debug is False
    assert setup.logging.verbose is True
    # sections and options the server does not know stay available to plugins
    assert setup.raw.get("database", "engine") == "sqlite3"
    assert setup.raw.get("server", "fam_blocking") == "true"


def test_options_missing_from_the_file_keep_their_defaults(tmp_path):
    conf = write_conf(tmp_path, "[server]\nrepository = /srv/bcfg2\n")
    setup = options.load(["-C", str(conf)])
    defaults = {opt.dest: opt for opt in options.OPTIONS}

    assert setup.server.repository == "/srv/bcfg2"
    assert setup.server.umask == int(defaults["server.umask"].default, 8)
    assert setup.server.listen_all is defaults["server.listen_all"].default
    assert setup.components.bcfg2 == defaults["components.bcfg2"].default
    assert setup.caching.client_metadata == defaults["caching.client_metadata"].default
    assert setup.communication.password is None


def test_relative_paths_in_the_file_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    conf = write_conf(tmp_path, "[server]\nrepository = myrepo\n")
    setup = options.load(["-C", str(conf)])
    assert setup.server.repository == str(tmp_path / "myrepo")


def test_command_line_flags_win_over_the_file(tmp_path):
    conf = write_conf(tmp_path, textwrap.dedent("""\
        [server]
        repository = /from/file
        listen_all = false
        [components]
        bcfg2 = https://file.example.com:6789
        [communication]
        password = filepw
        [logging]
        debug = false
        verbose = false
    """), "quiet.conf")
    setup = options.load(
        ["-C", str(conf), "-Q", str(tmp_path / "cli-repo"), "-S", "https://127.0.0.1:7000",
         "-x", "clipw", "--listen-all", "-d", "-v", "-D", str(tmp_path / "server.pid")],
        daemon_flag=True)

    assert setup.server.repository == str(tmp_path / "cli-repo")
    assert setup.components.bcfg2 == "https://127.0.0.1:7000"
    assert setup.communication.password == "clipw"
    assert setup.server.listen_all is True
    assert setup.logging.debug is True
    assert setup.logging.verbose is True
    assert setup.daemon == str(tmp_path / "server.pid")


def test_without_flags_the_file_values_stand(tmp_path):
    conf = write_conf(tmp_path, "[logging]\ndebug = true\n[server]\nlisten_all = true\n")
    setup = options.load(["-C", str(conf)], daemon_flag=True)
    assert setup.logging.debug is True
    assert setup.server.listen_all is True
    assert setup.daemon is None


def test_daemon_flag_is_only_known_to_programs_that_daemonize(tmp_path, capsys):
    conf = write_conf(tmp_path, "")
    with pytest.raises(SystemExit):
        options.load(["-C", str(conf), "-D", str(tmp_path / "pid")])
    assert "-D" in capsys.readouterr().err


@pytest.mark.parametrize(("section", "name", "value", "complaint"), [
    ("server", "listen_all", "maybe", "boolean"),
    ("logging", "syslog", "2", "boolean"),
    ("server", "max_request_size", "10MB", "integer"),
    ("server", "umask", "0089", "octal"),
    ("server", "filemonitor", "gamin2", "not one of"),
    ("caching", "client_metadata", "always", "not one of"),
    ("components", "bcfg2", "http://localhost:6789", "https://host:port"),
    ("components", "bcfg2", "https://localhost", "https://host:port"),
    ("components", "bcfg2", "https://localhost:port", "invalid port"),
])
def test_an_invalid_value_in_the_file_is_a_one_line_error(tmp_path, section, name, value,
                                                          complaint):
    conf = write_conf(tmp_path, f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError) as excinfo:
        options.load(["-C", str(conf)])
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(conf) in message
    assert f"[{section}]" in message
    assert name in message
    assert repr(value) in message
    assert complaint in message


def test_an_invalid_value_on_the_command_line_is_reported_as_such(tmp_path):
    conf = write_conf(tmp_path, "")
    with pytest.raises(ConfigError) as excinfo:
        options.load(["-C", str(conf), "-S", "ftp://server:21"])
    message = str(excinfo.value)
    assert "\n" not in message
    assert "command line" in message
    assert "[components] bcfg2" in message


def test_a_configuration_file_that_is_not_ini_is_a_one_line_error(tmp_path):
    conf = write_conf(tmp_path, "repository = /srv\n[server\n")
    with pytest.raises(ConfigError) as excinfo:
        options.load(["-C", str(conf)])
    assert str(conf) in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_dash_c_naming_a_missing_file_is_an_error(tmp_path):
    missing = tmp_path / "nowhere" / "bcfg2.conf"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        options.load(["-C", str(missing)])


def test_the_example_file_is_generated_from_the_table():
    assert (ROOT / "bcfg2.conf.example").read_text() == options.example()


def test_the_example_lists_every_option_of_the_table_in_its_section():
    listed = set()
    section = None
    for line in options.example().splitlines():
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            section = header.group(1)
            continue
        setting = re.fullmatch(r"#(\w+) =.*", line)
        if setting:
            listed.add((section, setting.group(1)))
    table = options.all_options()
    # a names option (the [encryption] passphrases) is every other line of its section
    assert listed == {(opt.section, opt.name) for opt in table if opt.type != "names"}
    # the plugins' and cores' own options are in it, each in its section
    assert {("probes", "allowed_groups"), ("rules", "regex"), ("server", "children")} <= listed
    assert not {("probes", "allowed_groups"), ("server", "children")} & {
        (opt.section, opt.name) for opt in options.OPTIONS}


def test_uncommenting_the_example_gives_the_defaults(tmp_path):
    text = re.sub(r"^#(\w+ =)", r"\1", options.example(), flags=re.M)
    conf = write_conf(tmp_path, text)
    from_example = options.load(["-C", str(conf)])
    defaults = options.build("/dev/null")
    for opt in options.OPTIONS + [o for o in defaults.options if o not in options.OPTIONS]:
        got = from_example.get(opt.section, opt.name)
        want = defaults.get(opt.section, opt.name)
        if want is None:  # options without a default are written empty
            assert got in (None, ""), opt.dest
        else:
            assert got == want, opt.dest
