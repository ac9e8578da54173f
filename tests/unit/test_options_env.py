"""Options from the environment: BCFG2_<SECTION>_<OPTION>, precedence, bad values, help."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bcfg2 import options, server
from bcfg2.errors import ConfigError
from bcfg2.logger import log_level, setup_logging


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No BCFG2_ variable of whoever runs the tests leaks in."""
    import os

    for var in [v for v in os.environ if v.startswith(options.ENV_PREFIX)]:
        monkeypatch.delenv(var)


def conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bcfg2.conf"
    path.write_text(text)
    return str(path)


def test_the_variable_name_is_prefix_section_and_option_in_upper_case():
    opt = next(o for o in options.OPTIONS if o.dest == "server.max_connections")
    assert opt.env == "BCFG2_SERVER_MAX_CONNECTIONS"
    assert options.env_name("server", "backend") == "BCFG2_SERVER_BACKEND"


def test_command_line_beats_environment_beats_file_beats_default(tmp_path, monkeypatch):
    path = conf(tmp_path, "[server]\nbackend = builtin\nmax_connections = 100\n"
                          "[communication]\nuser = from-file\n")
    assert options.load(["-C", "/dev/null"]).server.backend == "best"  # the default
    assert options.load(["-C", path]).server.backend == "builtin"
    monkeypatch.setenv("BCFG2_SERVER_BACKEND", "cherrypy")
    monkeypatch.setenv("BCFG2_SERVER_MAX_CONNECTIONS", "200")
    setup = options.load(["-C", path])
    assert setup.server.backend == "cherrypy"
    assert setup.server.max_connections == 200
    assert setup.communication.user == "from-file"  # no variable: the file stands
    setup = options.load(["-C", path, "--backend", "multiprocessing"])
    assert setup.server.backend == "multiprocessing"
    assert setup.server.max_connections == 200


def test_an_empty_variable_is_a_value_not_an_absence(tmp_path, monkeypatch):
    path = conf(tmp_path, "[server]\nvcs_root = /srv/checkout\n")
    monkeypatch.setenv("BCFG2_SERVER_VCS_ROOT", "")
    assert options.load(["-C", path]).server.vcs_root == ""


def test_booleans_paths_and_lists_convert_as_in_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BCFG2_SERVER_LISTEN_ALL", "yes")
    monkeypatch.setenv("BCFG2_SERVER_REPOSITORY", "repo")
    monkeypatch.setenv("BCFG2_SERVER_PLUGINS", "Metadata, Bundler,Cfg")
    setup = options.load(["-C", "/dev/null"])
    assert setup.server.listen_all is True
    assert setup.server.repository == str(tmp_path / "repo")
    assert setup.server.plugins == ["Metadata", "Bundler", "Cfg"]


def test_the_environment_chooses_the_core_and_sets_its_options(monkeypatch):
    monkeypatch.setenv("BCFG2_SERVER_BACKEND", "multiprocessing")
    monkeypatch.setenv("BCFG2_SERVER_CHILDREN", "3")
    setup = options.load(["-C", "/dev/null"])
    assert setup.server.children == 3


def test_plugin_options_come_from_the_environment_too(tmp_path, monkeypatch):
    path = conf(tmp_path, "[server]\nplugins = Metadata, Probes\n[probes]\nallowed_groups = a\n")
    monkeypatch.setenv("BCFG2_PROBES_ALLOWED_GROUPS", "web, db")
    assert options.load(["-C", path]).probes.allowed_groups == "web, db"
    # and the plugins named by the environment declare theirs
    monkeypatch.setenv("BCFG2_SERVER_PLUGINS", "Metadata, Rules")
    monkeypatch.setenv("BCFG2_RULES_REGEX", "true")
    assert options.load(["-C", "/dev/null"]).rules.regex is True


def test_passphrases_come_from_the_environment_by_lower_case_name(tmp_path, monkeypatch):
    path = conf(tmp_path, "[encryption]\nsite = from-file\nold = kept\nalgorithm = aes_128_cbc\n")
    monkeypatch.setenv("BCFG2_ENCRYPTION_SITE", "from-env")
    monkeypatch.setenv("BCFG2_ENCRYPTION_BACKUP", "another")
    monkeypatch.setenv("BCFG2_ENCRYPTION_ALGORITHM", "aes_192_cbc")
    setup = options.load(["-C", path])
    assert setup.encryption.passphrases == {"site": "from-env", "old": "kept",
                                            "backup": "another"}
    assert setup.encryption.algorithm == "aes_192_cbc"  # declared: an option, no passphrase


@pytest.mark.parametrize(("var", "value", "says"), [
    ("BCFG2_SERVER_MAX_CONNECTIONS", "x", "'x' is not an integer"),
    ("BCFG2_SERVER_CONNECTION_TIMEOUT", "soon", "'soon' is not a number"),
    ("BCFG2_SERVER_LISTEN_ALL", "maybe", "'maybe' is not a boolean"),
    ("BCFG2_SERVER_FILEMONITOR", "gamin", "'gamin' is not one of default, inotify, pseudo"),
    ("BCFG2_COMPONENTS_BCFG2", "http://x", "is not a URL"),
    ("BCFG2_LOGGING_LEVEL", "loud", "'loud' is not a log level (use debug, info, warning"),
])
def test_a_bad_value_names_the_variable(monkeypatch, var, value, says):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        options.load(["-C", "/dev/null"])
    assert str(err.value).startswith(f"{var}: ")
    assert says in str(err.value)


def test_the_server_refuses_a_bad_variable_with_its_name(monkeypatch, capsys):
    monkeypatch.setenv("BCFG2_SERVER_MAX_CONNECTIONS", "x")
    assert server.main(["-C", "/dev/null"]) == 2
    assert capsys.readouterr().err.strip() == \
        "bcfg2-server: BCFG2_SERVER_MAX_CONNECTIONS: 'x' is not an integer"


def test_a_bad_plugin_option_in_the_environment_names_it(monkeypatch):
    monkeypatch.setenv("BCFG2_SERVER_BACKEND", "multiprocessing")
    monkeypatch.setenv("BCFG2_SERVER_CHILDREN", "many")
    with pytest.raises(ConfigError, match=r"^BCFG2_SERVER_CHILDREN: 'many' is not an integer"):
        options.load(["-C", "/dev/null"])


def test_no_two_options_share_a_variable():
    table = options.all_options()
    by_var: dict[str, list[str]] = {}
    for opt in table:
        by_var.setdefault(opt.env, []).append(opt.dest)
    assert {var: dests for var, dests in by_var.items() if len(dests) > 1} == {}


def test_help_tells_the_precedence_and_each_flag_its_variable(capsys):
    with pytest.raises(SystemExit):
        options.load(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "BCFG2_<SECTION>_<OPTION>" in out
    assert ("the command line wins over the environment, which wins over bcfg2.conf, which "
            "wins over the default") in out
    assert "[server] backend, $BCFG2_SERVER_BACKEND" in out
    assert "[probes] allowed_groups, $BCFG2_PROBES_ALLOWED_GROUPS" in out  # a plugin's


def test_the_example_names_every_options_variable():
    text = " ".join(line.removeprefix("# ") for line in options.example().splitlines())
    assert "the command line wins over the environment" in text
    for opt in options.all_options():
        if opt.type != "names":
            assert f"(environment: {opt.env})" in text, opt.dest
    assert "(environment: BCFG2_ENCRYPTION_NAME)" in text


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(("conf_text", "argv", "env", "level"), [
    ("", [], {}, logging.WARNING),
    ("[logging]\nlevel = info\n", [], {}, logging.INFO),
    ("[logging]\nlevel = ERROR\n", [], {}, logging.ERROR),
    ("[logging]\nlevel = error\n", ["-v"], {}, logging.INFO),  # the most detailed wins
    ("[logging]\nlevel = info\n", ["-d"], {}, logging.DEBUG),
    ("[logging]\nlevel = error\n", [], {"BCFG2_LOGGING_LEVEL": "debug"}, logging.DEBUG),
    ("", [], {"BCFG2_LOGGING_VERBOSE": "on"}, logging.INFO),
])
def test_log_levels_by_name(tmp_path, monkeypatch, root_logger, conf_text, argv, env, level):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    setup = options.load(["-C", conf(tmp_path, conf_text + "[logging]\nsyslog = off\n"
                                     if "[logging]" not in conf_text
                                     else conf_text + "syslog = off\n"), *argv])
    assert log_level(setup) == level
    setup_logging(setup, console=False)
    assert root_logger.level == level


def test_a_misspelt_variable_is_named_with_the_option_it_resembles():
    env = {"BCFG2_SERVER_MAX_CONECTIONS": "100",  # one N short
           "BCFG2_SERVER_BACKEND": "builtin",  # an option
           "BCFG2_ENCRYPTION_SITE": "secret",  # a passphrase
           "BCFG2_INFO_HISTORY": "/tmp/history",  # bcfg2-info's own, like no option
           "BCFG2_PROBES_ALLOWED_GROUP": "x"}  # a plugin's option, one S short
    assert options.misspelt_variables(env) == [
        ("BCFG2_PROBES_ALLOWED_GROUP", "BCFG2_PROBES_ALLOWED_GROUPS"),
        ("BCFG2_SERVER_MAX_CONECTIONS", "BCFG2_SERVER_MAX_CONNECTIONS")]
    assert options.misspelt_variables({}) == []
