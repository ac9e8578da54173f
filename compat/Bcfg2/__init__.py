"""Upstream Bcfg2's module names, for repository code written for upstream.

Genshi and Cheetah templates, TemplateHelper helpers and ``Ldap/config.py``
files of real sites import from ``Bcfg2.Options``, ``Bcfg2.Server.Plugin``
and a few plugin modules. This package gives those imports what such code
uses, mapped onto ``bcfg2``; it is no second implementation, and new code
imports ``bcfg2`` itself.
"""
