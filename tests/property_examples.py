"""How many examples a property test tries.

Property tests of correctness (round trips, a model against the real
thing) run a fifth of their full count in ``nox -s tests``, at least
:data:`MINIMUM`, and the full count in ``nox -s properties``, which loads
the hypothesis profile :data:`FULL_PROFILE` (``pytest
--hypothesis-profile=properties``). Property tests that feed untrusted
input to a decoder (garbage, mutated or truncated frames, hash floods,
bombs) do not use this: they keep their full count in every run, CI's
included. docs/internals/test-suite.rst lists which is which.
"""

from __future__ import annotations

from hypothesis import settings

__all__ = ["FULL_PROFILE", "MINIMUM", "SUITE_FRACTION", "examples"]

FULL_PROFILE = "properties"
SUITE_FRACTION = 5
# tests/mutation/mutate.py runs each property at up to 25 examples: with
# this floor a mutation run tries as many as it did before the split.
MINIMUM = 25

# Registered here (tests/conftest.py imports this module) so that pytest's
# --hypothesis-profile finds it before any test module is collected.
settings.register_profile(FULL_PROFILE)


def examples(full: int) -> int:
    """``max_examples`` for a correctness property whose full count is ``full``."""
    if settings.get_current_profile_name() == FULL_PROFILE:
        return full
    return max(MINIMUM, full // SUITE_FRACTION)
