"""Lifeguard's local health score: its rules, each pinned at its bounds."""

from __future__ import annotations

import pytest

from trio_distribute._proto.awareness import LocalHealth


def test_default_multiplier_is_eight() -> None:
    # Lifeguard's default: the score saturates at 7, the interval at 8x.
    health = LocalHealth()
    health.apply(100)
    assert health.score == 7
    assert health.scale(1.0) == 8.0


@pytest.mark.parametrize("max_multiplier", [1, 2, 8])
def test_score_saturates_at_max_multiplier_minus_one(max_multiplier: int) -> None:
    health = LocalHealth(max_multiplier=max_multiplier)
    for _ in range(max_multiplier + 3):
        health.apply(1)
    assert health.score == max_multiplier - 1
    health.apply(-1)
    assert health.score == max(max_multiplier - 2, 0)


def test_score_never_goes_below_zero() -> None:
    health = LocalHealth(max_multiplier=4)
    health.apply(-1)
    assert health.score == 0
    health.apply(2)
    health.apply(-5)
    assert health.score == 0


def test_apply_adds_the_delta_inside_the_range() -> None:
    health = LocalHealth(max_multiplier=8)
    health.apply(3)
    assert health.score == 3
    health.apply(-2)
    assert health.score == 1


@pytest.mark.parametrize(("score", "expected"), [(0, 0.5), (1, 1.0), (7, 4.0)])
def test_scale_multiplies_the_interval_by_score_plus_one(score: int, expected: float) -> None:
    assert LocalHealth(max_multiplier=8, score=score).scale(0.5) == expected
