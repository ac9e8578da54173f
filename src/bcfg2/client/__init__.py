"""The Python 3 agent: pulls, verifies and applies a client's configuration (``bcfg2``)."""
