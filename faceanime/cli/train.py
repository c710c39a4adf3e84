"""``faceanime train dynamics``: train the 3D dynamics predictor on a prepared dataset.

The flags map one to one onto :class:`~faceanime.dynamics.config.TrainConfig`,
:class:`~faceanime.dynamics.config.DynamicsConfig` and
:class:`~faceanime.dynamics.config.LossConfig`; defaults and help texts come from them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from faceanime.dynamics.config import GROUPS, LEVELS, DynamicsConfig, LossConfig, TrainConfig


def _field_help(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the dataclass source is its help text."""
    import inspect

    helps: dict[str, str] = {}
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if ":" in stripped and "#" in stripped and not stripped.startswith(("#", '"')):
            name = stripped.split(":", 1)[0].strip()
            helps[name] = stripped.split("#", 1)[1].strip()
    return helps


def _add_fields(group: argparse._ArgumentGroup, cls: type, skip: set[str] = frozenset()) -> None:
    defaults = cls()
    helps = _field_help(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "").replace("%", "%%")
        if f.name == "progress":
            group.add_argument("--no-progress", dest="progress", action="store_false",
                               help="hide the progress bar")
        elif isinstance(default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=default, help=f"{text} (default: %(default)s)")
        elif isinstance(default, tuple):
            choices = GROUPS if f.name == "coefficients" else None
            group.add_argument(flag, dest=f.name, nargs="+", default=default, choices=choices,
                               metavar=f.name.upper().rstrip("S"),
                               help=f"{text} (default: {' '.join(default) or 'none'})")
        else:
            kind = type(default) if default is not None else str
            group.add_argument(flag, dest=f.name, type=kind, default=default,
                               choices=LEVELS if f.name == "levels" else None,
                               help=f"{text} (default: %(default)s)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``faceanime train dynamics`` (shared with ``tools/train_dynamics.py``)."""
    p.add_argument("--data", required=True,
                   help="dataset folder written by 'faceanime prepare' (manifest.json and "
                        "coefficients/), loaded whole; or shards written by 'faceanime dataset "
                        "shard' (a folder or fsspec URL with index.json), streamed")
    p.add_argument("-o", "--output", required=True,
                   help="folder for checkpoints, log.csv and loss.png (created)")
    p.add_argument("--resume", help="continue from this checkpoint (a folder, or a .safetensors "
                                    "with its .json and .state.pt beside it)")
    _add_fields(p.add_argument_group("training"), TrainConfig)
    _add_fields(p.add_argument_group("network"), DynamicsConfig)
    _add_fields(p.add_argument_group("losses (weights)"), LossConfig)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a learned component",
                       description="Train a learned component of the pipeline.")
    what = p.add_subparsers(dest="component", metavar="COMPONENT", required=True)
    d = what.add_parser(
        "dynamics", help="the 3D dynamics predictor (LSTM over coefficients)",
        description="Train the 3DDP LSTM on per-video coefficient sequences: split by video, "
                    "checkpoints (safetensors + JSON) every --checkpoint-every steps and at the "
                    "end, log.csv and loss.png in the output folder (docs/dynamics.md). Under "
                    "'torchrun --nproc_per_node N -m faceanime train dynamics ...' it trains "
                    "with DistributedDataParallel: --batch is the global batch, split evenly "
                    "over the N processes; rank 0 validates and writes (docs/scale.md).")
    add_arguments(d)
    d.set_defaults(func=run)
    register_generator(what)


def configs(args: argparse.Namespace) -> tuple[TrainConfig, DynamicsConfig, LossConfig]:
    """The three configs from parsed flags."""
    def build(cls: type):
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**values)

    return build(TrainConfig), build(DynamicsConfig), build(LossConfig)


def _main_rank() -> bool:
    """Whether this process reports: a plain run, or rank 0 of a torchrun (the other ranks'
    results are rank 0's)."""
    from faceanime.distributed import from_environment

    return from_environment().main


def run(args: argparse.Namespace) -> None:
    from faceanime.dynamics.train import train

    train_config, model_config, loss_config = configs(args)
    result = train(args.data, args.output, train_config, model_config, loss_config,
                   resume=args.resume)
    if not _main_rank():
        return
    summary = f"{result.checkpoint}: step {result.step}"
    if result.metrics:
        summary += (f", validation roll-out error {result.metrics['vertex_mm']:.2f} mm "
                    f"(holding the last frame: {result.metrics['hold_mm']:.2f} mm)")
    print(summary, file=sys.stderr)


# --- faceanime train generator ---------------------------------------------------------------

def _add_optional_fields(group: argparse._ArgumentGroup, cls: type, prefix: str = "") -> None:
    """Flags for a config's fields that stay absent from the namespace unless given (so that
    ``--tiny`` and ``--resume`` can supply the rest); ``prefix`` tells two configs' fields
    apart (``--d-channels``)."""
    defaults = cls()
    helps = _field_help(cls)
    for f in fields(cls):
        default = getattr(defaults, f.name)
        flag = "--" + (prefix + f.name).replace("_", "-")
        text = helps.get(f.name, "").replace("%", "%%") + f" (default: {default})"
        dest = f"{prefix}{f.name}"
        if isinstance(default, bool):
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, dest=dest, type=type(default), default=argparse.SUPPRESS,
                               help=text)


def add_generator_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``faceanime train generator`` (shared with ``tools/train_generator.py``)."""
    from faceanime.pgfg.config import DiscriminatorConfig, GeneratorConfig
    from faceanime.pgfg.config import LossConfig as GanLossConfig
    from faceanime.pgfg.config import TrainConfig as GanTrainConfig

    p.add_argument("--data", required=True,
                   help="dataset folder written by 'faceanime prepare' with crops (manifest.json, "
                        "coefficients/, crops/), loaded whole; or shards written by 'faceanime "
                        "dataset shard' (a folder or fsspec URL with index.json), streamed")
    p.add_argument("-o", "--output", required=True,
                   help="folder for checkpoints, log.csv, loss.png and samples/ (created)")
    p.add_argument("--resume", help="continue from this checkpoint (a folder, or a .safetensors "
                                    "with its .json and .state.pt beside it)")
    p.add_argument("--tiny", action="store_true",
                   help="tiny networks for CPU smoke runs (explicit network flags still apply)")
    _add_fields(p.add_argument_group("training"), GanTrainConfig)
    _add_optional_fields(p.add_argument_group("generator"), GeneratorConfig)
    _add_optional_fields(p.add_argument_group("discriminator"), DiscriminatorConfig, "d_")
    _add_optional_fields(p.add_argument_group("losses (weights)"), GanLossConfig)


def generator_configs(args: argparse.Namespace):
    """``(TrainConfig, GeneratorConfig | None, DiscriminatorConfig | None, LossConfig | None)``
    from parsed flags; a network or loss config is None when resuming without its flags."""
    from dataclasses import replace

    from faceanime.pgfg.config import DiscriminatorConfig, GeneratorConfig, tiny_configs
    from faceanime.pgfg.config import LossConfig as GanLossConfig
    from faceanime.pgfg.config import TrainConfig as GanTrainConfig

    given = vars(args)
    train_config = GanTrainConfig(**{f.name: given[f.name] for f in fields(GanTrainConfig)
                                     if f.name in given})
    tiny_g, tiny_d = tiny_configs()
    out = []
    for cls, prefix, base in ((GeneratorConfig, "", tiny_g), (DiscriminatorConfig, "d_", tiny_d),
                              (GanLossConfig, "", None)):
        values = {f.name: given[prefix + f.name] for f in fields(cls) if prefix + f.name in given}
        if base is not None and getattr(args, "tiny", False):
            out.append(replace(base, **values))
        elif values or not getattr(args, "resume", None):
            out.append(cls(**values))
        else:
            out.append(None)
    return (train_config, *out)


def run_generator(args: argparse.Namespace) -> None:
    from faceanime.pgfg.train import train as train_generator

    train_config, gen, disc, loss = generator_configs(args)
    result = train_generator(args.data, args.output, train_config, gen, disc, loss,
                             resume=args.resume)
    if not _main_rank():
        return
    summary = f"{result.checkpoint}: step {result.step}"
    if result.stopped_early:
        summary += " (stopped by --max-minutes)"
    m = result.metrics
    if m:
        summary += (f", held-out L1 {m['val_l1']:.4f} (classic render {m['classic_l1']:.4f}, "
                    f"source copy {m['source_l1']:.4f}), identity distance "
                    f"{m['val_identity']:.3f} (classic {m['classic_identity']:.3f})")
    print(summary, file=sys.stderr)


def register_generator(what: argparse._SubParsersAction) -> None:
    g = what.add_parser(
        "generator", help="the prior-guided face generator (PGFG, a conditional GAN)",
        description="Train PGFG on the aligned crops of a 'faceanime prepare' dataset: pairs of "
                    "frames of one video with their sparse priors, L1 + adversarial + identity "
                    "losses, an EMA generator, validation on held-out videos against the classic "
                    "render, checkpoints (safetensors + JSON), log.csv, loss.png and sample "
                    "grids in the output folder (docs/pgfg.md). Under 'torchrun "
                    "--nproc_per_node N -m faceanime train generator ...' it trains with "
                    "DistributedDataParallel: --batch is the global batch, split evenly over "
                    "the N processes; rank 0 keeps the EMA, validates and writes "
                    "(docs/scale.md).")
    add_generator_arguments(g)
    g.set_defaults(func=run_generator)
