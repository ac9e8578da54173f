"""``Bcfg2.Server``: upstream's server package name (see ``Bcfg2``)."""
