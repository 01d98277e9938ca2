"""The ``entrolab`` command line (one sub-command per job)."""
