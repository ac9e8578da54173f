"""The RELAX NG schemas of the repository formats (package data, read by bcfg2.lint.schemas)."""
