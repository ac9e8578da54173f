"""``Bcfg2.Server.Plugin``: upstream's plugin API names, from ``bcfg2.plugin``.

Repository code (TemplateHelper modules, templates) imports the errors and
a few base classes from here; they are this server's own classes.
"""

from bcfg2.plugin import *  # noqa: F403 - the names upstream's module offered
from bcfg2.plugin import __all__  # noqa: F401
