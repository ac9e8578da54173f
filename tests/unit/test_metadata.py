"""ClientMetadata: what plugins and templates see of a client."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
from conftest import Repo

from bcfg2.core import LocalCore
from bcfg2.metadata import ClientMetadata, MetadataQuery


def client(connectors: list[str] | None = None) -> ClientMetadata:
    query = MetadataQuery(all_connectors=None if connectors is None else lambda: connectors)
    return ClientMetadata("h", "p", ["g"], [], [], [], {}, None, None, None, query)


def test_a_running_connector_that_merged_nothing_reads_as_an_empty_dict() -> None:
    md = client(["Probes", "Properties"])
    assert md.Probes == {} and md.Properties == {}
    md.Probes = {"os": "Debian"}
    assert md.Probes == {"os": "Debian"}


@pytest.mark.parametrize("connectors", [["Probes"], [], None])
def test_any_other_missing_attribute_is_an_error_naming_it(connectors: list[str] | None) -> None:
    md = client(connectors)
    for name in ("Probse", "TemplateHelper", "nosuch"):
        with pytest.raises(AttributeError, match=repr(name)):
            getattr(md, name)
    assert not hasattr(md, "__setstate__")


def test_copies_and_pickles_keep_working() -> None:
    md = client(["Probes"])
    md.Probes = {"os": "Debian"}
    assert copy.copy(md).Probes == {"os": "Debian"}
    assert md.copy().groups == {"g"}
    again = pickle.loads(pickle.dumps(ClientMetadata("h", "p", [], [], [], [], {}, None, None,
                                                     None, MetadataQuery())))
    assert again.hostname == "h"
    with pytest.raises(AttributeError):
        again.Probes  # noqa: B018


def test_the_metadata_plugin_names_the_connectors_the_server_runs(
        repo: Repo, local_core: Callable[..., LocalCore]) -> None:
    core = local_core(repo, server__plugins="Metadata,Bundler,Probes,Properties")
    initial = core.metadata.get_initial_metadata("client1")  # before any connector merged
    assert initial.Probes == {} and initial.Properties == {}
    with pytest.raises(AttributeError):
        initial.GroupPatterns  # noqa: B018 - not loaded
