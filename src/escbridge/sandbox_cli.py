"""Moved to :mod:`escbridge.sandbox.backlog`; this alias goes once no test imports it.

(tests/core/test_sync.py and tests/core/test_sync_sandboxes.py)
"""

from escbridge.sandbox.backlog import config_yaml, default_matrix_path

__all__ = ["config_yaml", "default_matrix_path"]
