"""Same repository and same metadata give a byte-identical configuration.

Python randomises string hashing per process, so set and dict iteration
orders differ between runs. Each client of repo-example is built in fresh
interpreters with different PYTHONHASHSEED values and the documents compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lxml.etree

BUILD_ALL = """\
import json, sys
from bcfg2 import options
from bcfg2.core import LocalCore
from bcfg2.xml import tostring

repository, state = sys.argv[1], sys.argv[2]
setup = options.build("/dev/null", {
    "server.repository": repository,
    "server.state_dir": state,
    "server.plugins": "Metadata,Bundler,Cfg,Rules,Defaults,Packages",
    "server.filemonitor": "pseudo",
    "logging.syslog": "false",
})
core = LocalCore(setup)
try:
    configs = {name: tostring(core.BuildConfiguration(name))
               for name in core.metadata.list_clients()}
finally:
    core.shutdown()
json.dump(configs, sys.stdout)
"""

SEEDS = ("0", "1", "12345")


def test_every_client_gets_the_same_bytes_whatever_the_hash_seed(example_repo, tmp_path):
    runs = []
    for seed in SEEDS:
        env = dict(os.environ, PYTHONHASHSEED=seed)
        state = tmp_path / f"state-{seed}"
        runs.append(subprocess.Popen(
            [sys.executable, "-c", BUILD_ALL, str(example_repo), str(state)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True))
    outputs = []
    for proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))

    clients = sorted(outputs[0])
    listed = lxml.etree.parse(str(Path(str(example_repo)) / "Metadata" / "clients.xml"))
    assert clients == sorted(c.get("name") for c in listed.iter("Client"))
    for name in clients:
        config = lxml.etree.fromstring(outputs[0][name])
        assert config.tag == "Configuration" and len(config) > 0, name
        assert not config.xpath("//*[@failure]"), name
    for seed, output in zip(SEEDS[1:], outputs[1:], strict=True):
        for name in clients:
            assert output[name] == outputs[0][name], f"{name} differs with PYTHONHASHSEED={seed}"
