"""Shared pytest configuration for the garo_optax tests.

Rank promotion raises everywhere (safe with optax). Strict dtype promotion is
applied only around garo_optax's own transforms, inside the tests that can use
it: ``optax.scale_by_adam`` raises ``TypePromotionError`` under it.
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key() -> jax.Array:
    """A fixed PRNG key, so every test is deterministic."""
    return jax.random.key(0)
