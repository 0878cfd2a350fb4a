"""Hypothesis profiles for the property and fuzz tests (loaded by tests/conftest.py).

``ci``   what ``./scripts/test`` (hence ``.ci/run``) runs: every test's full example count,
         derandomized (the examples are a fixed function of the test, so a run is
         reproducible) and no example database (nothing read from or written to
         ``.hypothesis/``), no deadline (a loaded machine must not fail a test).
``dev``  the default of a bare ``pytest``: a fifth of the examples (at least 10), random,
         with the local example database so a failure found once is replayed first.

Choose with ``KSTLIB_HYPOTHESIS_PROFILE=ci|dev`` or ``pytest --hypothesis-profile=ci``;
``CI=true`` (set by CI services) selects ``ci`` when the variable is not given.

A test that needs more (or fewer) examples than the profile's default says so with
``@settings(max_examples=examples(N))``: ``N`` under ``ci``, scaled down under ``dev``.
"""

from __future__ import annotations

import os

from hypothesis import settings

__all__ = ["CI_EXAMPLES", "PROFILE", "examples"]

#: Examples per test under ``ci`` when the test does not say (Hypothesis' own default).
CI_EXAMPLES = 100
_DEV_FRACTION = 5
_DEV_MINIMUM = 10

settings.register_profile(
    "ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, deadline=None
)
settings.register_profile("dev", max_examples=CI_EXAMPLES // _DEV_FRACTION, deadline=None)

_truthy_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
PROFILE = os.environ.get("KSTLIB_HYPOTHESIS_PROFILE") or ("ci" if _truthy_ci else "dev")
settings.load_profile(PROFILE)


def examples(ci: int) -> int:
    """``max_examples`` for a test that needs ``ci`` examples under the ``ci`` profile.

    Scaled by the profile in force when the test module is imported (``--hypothesis-profile``
    is applied before collection, so both ways of choosing a profile are honoured): ``ci``
    under ``ci``, a fifth (at least 10) under ``dev``.
    """
    current = settings.default.max_examples
    if current >= CI_EXAMPLES:
        return ci
    return max(_DEV_MINIMUM, ci * current // CI_EXAMPLES)
