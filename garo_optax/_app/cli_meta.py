"""``garo-optax meta-train``: meta-trains a GARO controller from a named config.

The run's folder holds ``config.json``, ``checkpoints/`` (orbax, every
``--checkpoint-every`` meta-steps and at the end), ``metrics.jsonl`` (one JSON
object per meta-step) and, when the run is complete, ``controller.npz``. Started
again on the same folder, the command resumes from the newest checkpoint and
continues exactly as an uninterrupted run would; metrics logged after that
checkpoint are dropped and logged again.
"""

import argparse
import functools
import json
import math
import pathlib
import sys

import jax

from garo_optax._app.progress import ProgressLine


def _compiled_run(config):
    # The meta-step does not depend on the number of steps: a run resumed to
    # train longer, in the same process, reuses the compiled one.
    return _make_meta_train(config._replace(steps=1))


@functools.lru_cache(maxsize=4)
def _make_meta_train(config):
    from garo_optax.meta import _train

    return _train.make_meta_train(config)


def _read_metrics(path: pathlib.Path, upto: int) -> list[str]:
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if json.loads(line)["step"] <= upto]


def meta_train_command(args: argparse.Namespace) -> int:
    """Runs ``garo-optax meta-train`` (see the module docstring).

    Args:
      args: the parsed arguments (``config``, ``steps``, ``out``,
        ``checkpoint_every``, ``quiet``).

    Returns:
      The exit code.
    """
    from garo_optax.meta import _checkpoint, _train

    config = _train.get_config(args.config)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        config = config._replace(steps=args.steps)
    if args.checkpoint_every < 1:
        raise ValueError(
            f"--checkpoint-every must be >= 1, got {args.checkpoint_every}"
        )
    _train.check_config(config)
    out = pathlib.Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(
            json.dumps(_checkpoint.config_to_json(config), indent=1) + "\n"
        )
    except OSError as error:
        raise ValueError(f"cannot write to --out {out}: {error}") from error

    init, step = _compiled_run(config)
    checkpointer = _checkpoint.Checkpointer(out / "checkpoints", config)
    state = init()
    restored = checkpointer.restore(state)
    if restored is not None:
        state = restored
    start = int(state.step)
    metrics_path = out / "metrics.jsonl"
    kept = _read_metrics(metrics_path, start)
    metrics_path.write_text("".join(line + "\n" for line in kept))
    if not args.quiet and start:
        print(f"resuming {out} from meta-step {start}", file=sys.stderr)
    progress = None if args.quiet else ProgressLine(config.steps)
    with open(metrics_path, "a") as log:
        while int(state.step) < config.steps:
            state, metrics = step(state)
            n = int(state.step)
            record = {k: float(v) for k, v in jax.device_get(metrics).items()}
            record["step"] = n
            log.write(json.dumps(record) + "\n")
            log.flush()
            if progress is not None:
                progress.update(
                    n,
                    f"meta_loss {record['meta_loss']:.4f} "
                    f"grad_norm {record['grad_norm']:.3g}",
                    rate_unit="steps",
                )
            if n % args.checkpoint_every == 0 or n == config.steps:
                checkpointer.save(state)
    checkpointer.close()
    _checkpoint.save_controller(out / "controller.npz", state.controller)
    if not args.quiet:
        print(f"wrote {out / 'controller.npz'}", file=sys.stderr)
    return 0


# Inner steps of the evaluation runs, per family (default for the others).
EVAL_STEPS = {"char_transformer": 200, "cnn_digits": 500, "mnist1d_cnn": 500}
DEFAULT_EVAL_STEPS = 1000


def _load_eval_controller(spec: str):
    from garo_optax._src import pretrained
    from garo_optax.meta import _train

    if spec == "pretrained" or spec in pretrained.available():
        name = pretrained.DEFAULT if spec == "pretrained" else spec
        info = (
            pretrained.pretrained_info(name) if name in pretrained.available() else {}
        )
        controller = pretrained.pretrained(name)
        fields = info.get("config")
    else:
        path = pathlib.Path(spec)
        if path.is_dir():
            path = path / "controller.npz"
        controller = pretrained.read_controller(path)
        config_path = path.parent / "config.json"
        fields = json.loads(config_path.read_text()) if config_path.exists() else None
    if fields is None:
        config = _train.get_config("garo-v1")
    else:
        from garo_optax.meta import _checkpoint

        config = _checkpoint.config_from_json(fields)
    return controller, config


def _eval_selection(args: argparse.Namespace):
    """The peers and loss scales asked for (validated)."""
    from garo_optax._app import registry
    from garo_optax.meta import _evaluate

    peers = getattr(args, "peers", None)
    peers = list(registry.PEERS) if peers is None else list(peers)
    unknown = [name for name in peers if name not in registry.PEERS]
    if unknown:
        raise ValueError(
            f"--peers: unknown {unknown}; expected any of {list(registry.PEERS)}"
        )
    scales = getattr(args, "loss_scales", None)
    scales = _evaluate.LOSS_SCALES if scales is None else tuple(scales)
    for scale in scales:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"--loss-scales must be finite and > 0, got {scale}")
    return peers, (1.0, *dict.fromkeys(s for s in scales if s != 1.0))


def meta_eval_command(args: argparse.Namespace) -> int:
    """Runs ``garo-optax meta-eval``: a controller against GARO's initial
    controller, the optax baselines and the tuning-free peers on held-out
    families, each also with its loss rescaled (the baselines are
    :data:`~garo_optax._app.registry.META_EVAL_BASELINES`, the peers those of
    the registry).

    Prints one table per family (and rescaled family) and the summary of
    :func:`garo_optax.meta._evaluate.summarize`; with ``--out``, also writes
    them to ``meta_eval.txt``, everything to ``meta_eval.json`` and one PNG of
    loss curves per family.

    Args:
      args: the parsed arguments (``controller``, ``families``, ``steps``,
        ``tasks``, ``no_sweep``, ``peers``: peer names, ``None`` for all of
        them; ``loss_scales``: ``None`` for
        :data:`~garo_optax.meta._evaluate.LOSS_SCALES`; ``out``).

    Returns:
      The exit code.
    """
    from garo_optax import tasks as tasks_lib
    from garo_optax._app import registry
    from garo_optax.meta import _evaluate, _train

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {args.tasks}")
    peers, scales = _eval_selection(args)
    names = args.families or list(tasks_lib.HELD_OUT_FAMILIES)
    for name in names:
        tasks_lib.get_family(name)  # an unknown name fails before any run
    controller, config = _load_eval_controller(args.controller)
    controllers = {
        "garo_trained": controller,
        # The meta-initialization, also for a warm-started config.
        "garo_init": _train.initial_controller(config._replace(warm_start=None)),
    }
    if controller.design.scale_free:  # the seed design's shipped controller
        from garo_optax._src import pretrained

        controllers["garo_v1"] = pretrained.pretrained("garo-v1")
    options = {"granularity": config.granularity, "lagged": config.lagged}
    baselines = {n: registry.REGISTRY[n] for n in registry.META_EVAL_BASELINES}
    contenders = {n: registry.REGISTRY[n] for n in peers}
    out = pathlib.Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot write to --out {out}: {error}") from error
    report = {"controller": args.controller, "peers": peers, "families": {}}
    tables, runs = [], {}
    for name in names:
        steps = args.steps or EVAL_STEPS.get(name, DEFAULT_EVAL_STEPS)
        for scale in scales:
            family = _evaluate.scaled_family(name, scale)
            label = _evaluate.scaled_name(name, scale)
            runs[label] = _evaluate.evaluate_family(
                controllers,
                family,
                num_tasks=args.tasks,
                num_steps=steps,
                sweep=not args.no_sweep,
                garo_options=options,
                baselines=baselines,
                peers=contenders,
            )
            rows = _evaluate.summary_rows(runs[label])
            tables.append(_evaluate.format_table(f"{label} ({steps} steps)", rows))
            print(tables[-1], flush=True)
            report["families"][label] = {
                "family": name,
                "loss_scale": scale,
                "steps": steps,
                "rows": rows,
                "sweep": _sweeps(runs[label]),
            }
            if out is not None:
                _evaluate.plot_family(out / f"{label}.png", label, runs[label])
    report["summary"] = _evaluate.summarize(runs, peers)
    tables.append(_evaluate.format_summary(report["summary"]))
    print("\n" + tables[-1], flush=True)
    if out is not None:
        (out / "meta_eval.txt").write_text("\n\n".join(tables) + "\n")
        (out / "meta_eval.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _sweeps(results) -> dict:
    """Swept entry -> [[rate, final loss], ...] of its sweep."""
    return {k: [list(x) for x in c.sweep] for k, c in results.items() if c.sweep}
