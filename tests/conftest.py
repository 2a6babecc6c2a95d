"""Test-suite settings.

Under CI (``CI`` set, as ``.ci/run`` runs) hypothesis draws its examples deterministically, so a
submission's result does not depend on which random examples one run happened to try; locally it
explores new examples on every run (and replays earlier failures from its database).
"""
from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
