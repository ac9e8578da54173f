"""``Bcfg2.Server.Plugins``: upstream's plugin modules that repository code imports."""
