"""The ``demseg`` command line: parses flags, calls the stage, maps errors to exit codes.

Every user-facing failure is a :class:`DemsegError`: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from demseg.errors import DemsegError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise DemsegError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}") from None


def int_list(text: str) -> list[int]:
    values = [positive_int(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("needs at least one number")
    return values


def name_list(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("needs at least one name")
    return values


# ---------------------------------------------------------------- commands


def _cmd_synth(args: argparse.Namespace) -> int:
    from demseg.data.synth import generate_world

    spec_path = generate_world(args.out, scenes=args.scenes, size_px=args.size_px, pixel_size_m=args.pixel_size_m,
                               seed=args.seed, val_fraction=args.val_fraction, progress=not args.quiet)
    print(f"wrote {args.scenes} scene(s) and {spec_path}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from demseg.data.check import check_spec, format_reports
    from demseg.data.spec import load_spec

    spec = load_spec(args.spec, crs=args.crs)
    reports = check_spec(spec, tile_size_px=args.tile_size_px, min_valid_fraction=args.min_valid_fraction,
                         road_width_m=args.road_width_m)
    print(format_reports(reports))
    errors = [r for r in reports if r.error]
    if errors:
        raise DemsegError(f"{len(errors)} of {len(reports)} scene(s) failed: {errors[0].problems[0]}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from demseg.data.check import check_spec, format_reports
    from demseg.data.spec import load_spec
    from demseg.data.synth import generate_world

    print(f"demseg demo: generating a synthetic DEM world ({args.scenes} scenes) in {args.out}; "
          "training lands with the few-shot issue, so this demo stops after the data check")
    spec_path = generate_world(args.out, scenes=args.scenes, seed=args.seed, progress=True)
    print(format_reports(check_spec(load_spec(spec_path))))
    return 0


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile-size-px", type=positive_int, default=224, help="tile side in pixels (default 224)")
    parser.add_argument("--min-valid-fraction", type=fraction, default=0.75,
                        help="drop tiles with less valid elevation than this (default 0.75)")
    parser.add_argument("--crs", help="CRS for rasters that declare none, e.g. EPSG:2154")
    parser.add_argument("--road-width-m", type=positive_float, help="width to buffer road lines that carry none")


def build_parser() -> argparse.ArgumentParser:
    """The full ``demseg`` command tree."""
    parser = _Parser(prog="demseg", description="Segment LiDAR elevation models into buildings and roads.")
    from demseg import __version__

    parser.add_argument("--version", action="version", version=f"demseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    synth = commands.add_parser("synth", help="generate a synthetic DEM world with labels",
                                description="Generate georeferenced synthetic city DEMs, labels (raster and vector), "
                                            "previews and a dataset spec.")
    synth.add_argument("out", help="output folder")
    synth.add_argument("--scenes", type=positive_int, default=20, help="number of scenes (default 20)")
    synth.add_argument("--size-px", type=positive_int, default=896, help="scene side in pixels (default 896)")
    synth.add_argument("--pixel-size-m", type=positive_float, default=0.5, help="pixel size in metres (default 0.5)")
    synth.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    synth.add_argument("--val-fraction", type=fraction, default=0.2, help="share of validation scenes (default 0.2)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    data = commands.add_parser("data", help="inspect datasets", description="Inspect dataset specs.")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    data_commands.required = True
    check = data_commands.add_parser("check", help="load every scene of a spec and print a table",
                                     description="Load every scene of a dataset spec (YAML or folder) and print "
                                                 "size, pixel size, CRS, valid and label fractions, tiles and "
                                                 "problems. Exits 2 if any scene fails to load.")
    check.add_argument("spec", help="dataset spec (YAML) or folder of scenes")
    _add_data_flags(check)
    check.set_defaults(func=_cmd_data_check)

    demo = commands.add_parser("demo", help="run the main job on the embedded synthetic world",
                               description="Generate the synthetic DEM world and check it.")
    demo.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    demo.add_argument("--scenes", type=positive_int, default=20, help="synthetic scenes (default 20)")
    demo.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_cmd_demo)

    for register in _EXTRA_COMMANDS:
        register(commands)
    return parser


_EXTRA_COMMANDS: list[Callable] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except DemsegError as exc:
        print(f"demseg: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("demseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
