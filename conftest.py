"""Shared pytest set-up for the unit tests (tests/) and nbval's notebook runs (notebooks/).

Each pytest session gets its own empty cache folder (processed Omniglot, trained artefacts), so
tests never reuse what an earlier run or a user's notebooks left in ~/.cache/metagan, and
notebooks run by nbval are forced to the ``smoke`` profile.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="metagan-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)  # left nothing behind in /tmp
os.environ["METAGAN_PROFILE"] = "smoke"


def pytest_collection_modifyitems(config, items):
    """nbval's notebook runs start a kernel per notebook: mark them ``slow`` like the unit tests that spawn processes
    (``make test`` runs everything; ``pytest -m "not slow"`` is the quick loop)."""
    import pytest

    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
