db1: primary database. Managed by Bcfg2; talk to the DBA team before changing anything.
