"""Rules: literal entries (packages, services, paths...) with priorities."""

from __future__ import annotations

from bcfg2.options import Option
from bcfg2.plugin import PrioDir


class Rules(PrioDir):
    """Binds abstract entries from the XML files in Rules/.

    The file with the highest ``priority`` wins; with ``[rules] regex`` the
    entry names may be regular expressions (anchored at both ends).
    """

    options = (
        Option("rules", "regex", False, "Allow regular expressions in Rules entry names.",
               type="bool"),
        Option("rules", "replace_name", False,
               "Replace %{name} in Rules attributes with the entry's name.", type="bool"),
    )
    regex_option = ("rules", "regex")
    #: its rules' choices are reported and its bindings promised (``bcfg2.bindmemo``)
    binds_by_likeness = True
    replace_name_option = ("rules", "replace_name")
