"""The ``garo-optax`` program: its CLI, the bench, the claims, reports and timing.

Private: nothing in the library (``garo_optax._src``), ``garo_optax.tasks`` or
``garo_optax.meta`` imports it; it imports all of them.
"""
