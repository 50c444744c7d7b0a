"""The ``garo-optax`` command-line program.

Usage::

    garo-optax --version
    garo-optax list
    garo-optax bench --quick
    garo-optax meta-train --config smoke --out runs/smoke
    garo-optax meta-eval --controller runs/smoke --out runs/smoke/eval

Each subcommand is one function ``_name(args) -> int`` plus one :class:`Command`
entry in :data:`COMMANDS`, which names it, gives its one-line help and lists its
own arguments (built with :func:`_arg`). Bad input ends with a one-line error on
stderr and a non-zero exit code.
"""

import argparse
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import optax

import garo_optax

PROG = "garo-optax"


class Command(NamedTuple):
    """A subcommand: its name, one-line help, function and own arguments."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = ()


def _arg(*flags: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Packs the arguments of one ``parser.add_argument`` call."""
    return flags, kwargs


def public_optimizers() -> dict[str, Callable[..., optax.GradientTransformation]]:
    """The public optimizers of garo_optax, by name.

    A public optimizer is a function in ``garo_optax.__all__`` annotated to
    return an :class:`optax.GradientTransformation` (or a subclass, such as
    :class:`optax.GradientTransformationExtraArgs`).

    Returns:
      A dict from public name to factory, in ``__all__`` order.
    """
    optimizers = {}
    for name in garo_optax.__all__:
        obj = getattr(garo_optax, name)
        if not inspect.isfunction(obj):
            continue
        returns = inspect.signature(obj, eval_str=True).return_annotation
        if inspect.isclass(returns) and issubclass(
            returns, optax.GradientTransformation
        ):
            optimizers[name] = obj
    return optimizers


def summary(obj: Any) -> str:
    """The first line of an object's docstring ("" when it has none).

    Args:
      obj: any object.

    Returns:
      The one-line summary.
    """
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def registry_lines() -> list[str]:
    """The lines of ``garo-optax list`` about the optimizer registry.

    A header, then one line per entry of
    :data:`garo_optax._app.registry.REGISTRY`: its name (``*``: not in
    ``garo-optax bench``'s default run), family, default learning rate
    (``-``: it sets its own) and description.

    Returns:
      The lines.
    """
    from garo_optax._app import registry  # imports optax.contrib's peers

    width = max(map(len, registry.REGISTRY)) + 1
    lines = [
        "configurations of the optimizer registry (* not in the default "
        "`garo-optax bench` run):"
    ]
    for name, spec in registry.REGISTRY.items():
        label = name if spec.bench else f"{name}*"
        rate = "-" if spec.default_lr is None else f"{spec.default_lr:g}"
        lines.append(
            f"  {label:<{width}}  {spec.group:<7}  {rate:>6}  {spec.description}"
        )
    return lines


def _list(args: argparse.Namespace) -> int:
    del args
    optimizers = public_optimizers()
    width = max(map(len, optimizers), default=0)
    for name, factory in optimizers.items():
        print(f"{name:<{width}}  {summary(factory)}")
    print("\n" + "\n".join(registry_lines()))
    return 0


def _meta_train(args: argparse.Namespace) -> int:
    # Imported here: `garo-optax list` must not pay for the meta machinery.
    from garo_optax._app import cli_meta

    return cli_meta.meta_train_command(args)


def _bench(args: argparse.Namespace) -> int:
    from garo_optax._app import cli_bench

    return cli_bench.bench_command(args)


def _bench_arguments():
    from garo_optax._app import cli_bench

    return tuple(_arg(*flags, **kwargs) for flags, kwargs in cli_bench.ARGUMENTS)


def _meta_eval(args: argparse.Namespace) -> int:
    from garo_optax._app import cli_meta

    return cli_meta.meta_eval_command(args)


COMMANDS: tuple[Command, ...] = (
    Command(
        "list",
        "list the public optimizers and the registry's configurations",
        _list,
    ),
    Command(
        "bench",
        "compare every optimizer on real small tasks (--speed, --claims)",
        _bench,
        _bench_arguments(),
    ),
    Command(
        "meta-train",
        "meta-train a GARO controller from a named config (resumable)",
        _meta_train,
        (
            _arg("--config", default="smoke", help="a named config (default: smoke)"),
            _arg("--steps", type=int, default=None, help="override the meta-steps"),
            _arg("--out", required=True, help="the run's folder"),
            _arg(
                "--checkpoint-every",
                type=int,
                default=50,
                help="meta-steps between checkpoints (default: 50)",
            ),
            _arg("--quiet", action="store_true", help="no progress output"),
        ),
    ),
    Command(
        "meta-eval",
        "compare a GARO controller with optax baselines",
        _meta_eval,
        (
            _arg(
                "--controller",
                default="pretrained",
                help="'pretrained', a shipped name, a run folder or a .npz file",
            ),
            _arg("--families", nargs="+", default=None, help="default: held out"),
            _arg("--steps", type=int, default=None, help="inner steps per run"),
            _arg("--tasks", type=int, default=4, help="tasks per family (default 4)"),
            _arg("--no-sweep", action="store_true", help="baselines at defaults only"),
            _arg("--peers", nargs="*", default=None, help="tuning-free peers (all)"),
            _arg(
                "--loss-scales",
                nargs="*",
                type=float,
                default=None,
                help="also run with the loss times each (1e-3 1e3)",
            ),
            _arg("--out", default=None, help="folder for meta_eval.json and PNGs"),
        ),
    ),
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Builds the ``garo-optax`` argument parser from :data:`COMMANDS`.

    Returns:
      The parser; the chosen command's function is in the ``run`` attribute of
      the parsed namespace.
    """
    parser = _Parser(
        prog=PROG,
        description="Self-tuning optimizers as optax transformations.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {garo_optax.__version__}"
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.help
        )
        for flags, kwargs in command.arguments:
            sub.add_argument(*flags, **kwargs)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``garo-optax`` program.

    Args:
      argv: the arguments after the program name; ``None`` reads ``sys.argv``.

    Returns:
      The exit code: 0 on success, non-zero on bad input (after a one-line
      error on stderr).
    """
    parser = build_parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.argv = argv[1:]
        return args.run(args)
    except SystemExit as exit_:  # --help, --version and argparse errors
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except ValueError as error:  # invalid values found by a command
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which closed it
        # Keep the interpreter's final flush of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
