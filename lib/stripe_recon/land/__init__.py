"""Landing: both sides' inputs into bronze and silver Delta tables (see land/common.py for the flow).

``land_internal(run)`` (internal.py) and ``land_stripe_files(run)`` (stripe_files.py) are the entry
points the CLI calls; each returns its counts and records them in the runs ledger.
"""
