"""Rules: literal entries (packages, services, paths...) with priorities."""

from __future__ import annotations

from bcfg2.plugin import PrioDir


class Rules(PrioDir):
    """Binds abstract entries from the XML files in Rules/.

    The file with the highest ``priority`` wins; with ``[rules] regex`` the
    entry names may be regular expressions (anchored at both ends).
    """

    regex_option = ("rules", "regex")
    replace_name_option = ("rules", "replace_name")
