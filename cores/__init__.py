"""Network cores: one module per core, imported only when chosen."""
