"""Runs the ``garo-optax`` program: ``python -m garo_optax``."""

if __name__ == "__main__":
    from garo_optax._app.cli import main

    raise SystemExit(main())
