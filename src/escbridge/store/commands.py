"""Moved to :mod:`escbridge.cli.store`; this alias goes once no test imports it.

(tests/core/test_store_commands.py)
"""

from escbridge.cli.store import configure_db_parser, configure_jobs_parser, run_db, run_jobs

__all__ = ["configure_db_parser", "configure_jobs_parser", "run_db", "run_jobs"]
