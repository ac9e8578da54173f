"""The public API of the library modules third-party plugins import, pinned.

Adding or removing a public name of ``bcfg2.plugin`` or ``bcfg2.templates``
is a deliberate change: it fails here until the list below says so too.
"""

from __future__ import annotations

import types

import pytest

import bcfg2.encryption
import bcfg2.identity
import bcfg2.plugin
import bcfg2.plugin.manager
import bcfg2.templates

PLUGIN_API = [
    "BundleInfo", "Caching", "Caller", "Option", "ClientACLs", "ClientRunHooks", "ClientSummary",
    "Condition", "Connector",
    "Debuggable", "Decision", "DirectoryBacked", "EntrySet", "FileBacked", "Generator",
    "GoalValidator", "GroupInfo", "INTERFACES", "InfoXML", "Metadata",
    "MetadataConsistencyError", "MetadataRuntimeError", "Plugin", "PluginExecutionError",
    "PluginInitError", "PackageSources", "PrioDir", "PriorityStructFile", "Probing", "PropertyFiles",
    "Resolution", "SourceInfo",
    "RepositoryError", "SPECIFIC_SUFFIX", "SpecificData", "Specificity", "SpecificityError",
    "Statistics", "StructFile", "Structure", "StructureValidator", "TemplateDataProvider",
    "TemplateReads", "ThreadedStatistics",
    "ValidationError", "VcsCommandError", "VcsVersion", "Version", "XMLDirectoryBacked",
    "XMLFileBacked", "admitted", "as_bool",
    "bind_info", "condition_holds", "conditions_hold", "default_path_metadata", "depends_on",
    "executables", "exposed", "listing", "not_cacheable",
    "flatten_conditions", "match_element", "missing_methods", "run_vcs", "set_content",
]

MANAGER_API = [
    "BUILTIN_CORES", "CORE_GROUP", "PLUGIN_GROUP", "BUILTIN_PLUGINS", "best_core",
    "check_plugin", "component_options", "core_names", "find_core", "find_plugin",
    "plugin_names", "register", "registered",
    "unregister",
]

IDENTITY_API = ["AGENT_METHODS", "CLIENT_NAME", "RESERVED_CLIENT_NAMES", "Caller", "admin_identity",
                "common_name", "identity_allows", "is_loopback", "reserved_client_name",
                "valid_client_name"]

TEMPLATES_API = [
    "GenshiLookup", "MAX_RANGE", "MAX_RENDERED", "TemplateSyntaxError", "UndefinedError",
    "bounded_join", "bounded_range", "compile_cheetah", "compile_genshi", "compile_jinja2", "render_error",
    "sandboxed_environment", "template_location",
]

ENCRYPTION_API = [
    "AUTH_MAGIC", "COMPAT_ALGORITHMS", "COMPAT_PREFIX", "CRYPT_SUFFIX", "FORMATS",
    "DecryptionError", "Encryption", "ScryptCost", "auth_decrypt", "auth_encrypt",
    "compat_decrypt", "compat_encrypt", "decrypt_elements", "detect_format",
    "evp_bytes_to_key", "is_text", "key_name",
]


def public_attributes(module: types.ModuleType) -> set[str]:
    """Public names a module offers: a package's re-exports, a module's own definitions.

    Submodules are its layout, not its API; a plain module's imports (``os``,
    ``Any``) are not offered unless ``__all__`` re-exports them.
    """
    package = hasattr(module, "__path__")
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or name == "TYPE_CHECKING" or isinstance(value, types.ModuleType) \
                or type(value).__module__ == "__future__":  # from __future__ import annotations
            continue
        defined_in = getattr(value, "__module__", None) if callable(value) else None
        if package or defined_in in (None, module.__name__) or name in module.__all__:
            names.add(name)
    return names


@pytest.mark.parametrize("module, expected", [
    (bcfg2.plugin, PLUGIN_API),
    (bcfg2.templates, TEMPLATES_API),
    (bcfg2.plugin.manager, MANAGER_API),
    (bcfg2.identity, IDENTITY_API),
    (bcfg2.encryption, ENCRYPTION_API),
], ids=["bcfg2.plugin", "bcfg2.templates", "bcfg2.plugin.manager", "bcfg2.identity",
        "bcfg2.encryption"])
def test_exported_members(module: types.ModuleType, expected: list[str]) -> None:
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name is listed twice in __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"in __all__ but not defined: {missing}"
    unlisted = sorted(public_attributes(module) - set(exported))
    assert not unlisted, f"public but not in __all__: {unlisted}"
    assert sorted(exported) == sorted(expected)
