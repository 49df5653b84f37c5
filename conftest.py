"""Shared pytest set-up for the unit tests (tests/) and nbval's notebook runs (notebooks/).

Each pytest session gets its own empty cache folder (rendered glyphs, trained artefacts), so
tests never reuse what an earlier run or a user's notebooks left in ~/.cache/metagan, and
notebooks run by nbval are forced to the ``smoke`` profile.
"""

import os
import tempfile

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="metagan-test-cache-")
os.environ["METAGAN_PROFILE"] = "smoke"
