"""Command-line flags made from pydantic configs: the defaults and help texts live in the configs only.

:func:`add_config_flags` adds one ``--flag`` per config field (type, bounds, choices, default and
help from the field); :func:`config_from_args` builds the config from the flags the user gave, so
the CLI and ``Config(**same_values)`` in Python produce the same object.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from typing import Literal

import annotated_types
from pydantic import BaseModel, ValidationError

from demseg.errors import DemsegError


def _number(kind: type, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def bounded(kind: type, low=None, low_inclusive=True, high=None, high_inclusive=True):
    """An argparse type: ``kind`` (int or float) within the bounds, with a plain-words error."""
    def parse(text: str):
        value = _number(kind, text)
        too_low = low is not None and (value < low if low_inclusive else value <= low)
        too_high = high is not None and (value > high if high_inclusive else value >= high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(_bounds_message(low, low_inclusive, high, high_inclusive, text))
        return value
    return parse


def _bounds_message(low, low_inclusive, high, high_inclusive, text) -> str:
    if low == 0 and high is None:
        return f"must be {'zero or positive' if low_inclusive else 'positive'}, got {text}"
    if low is not None and high is not None:
        return f"must be between {low} and {high}{'' if high_inclusive else ' (excluded)'}, got {text}"
    if low is not None:
        return f"must be {'at least' if low_inclusive else 'more than'} {low}, got {text}"
    return f"must be {'at most' if high_inclusive else 'below'} {high}, got {text}"


def list_of(item_type):
    """An argparse type for comma-separated values."""
    def parse(text: str) -> list:
        values = [item_type(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("needs at least one value")
        return values
    return parse


def mapping_of(text: str) -> dict[str, int]:
    """An argparse type: ``buildings=6,roads=11`` as {"buildings": 6, "roads": 11}."""
    mapping = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, code = part.partition("=")
        if not sep or not name.strip() or not code.strip().isdigit():
            raise argparse.ArgumentTypeError(f"expected NAME=CODE pairs such as buildings=6,roads=11, got {text}")
        mapping[name.strip()] = int(code)
    if not mapping:
        raise argparse.ArgumentTypeError("needs at least one NAME=CODE pair")
    return mapping


def _field_type(field) -> tuple[type, bool]:
    """(scalar type, optional) of a field annotation such as ``int | None``."""
    annotation = field.annotation
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return inner[0], True
    return annotation, False


def _scalar_parser(kind, metadata):
    if kind in (int, float):
        low = high = None
        low_inclusive = high_inclusive = True
        for item in metadata:
            if isinstance(item, annotated_types.Gt):
                low, low_inclusive = item.gt, False
            elif isinstance(item, annotated_types.Ge):
                low = item.ge
            elif isinstance(item, annotated_types.Lt):
                high, high_inclusive = item.lt, False
            elif isinstance(item, annotated_types.Le):
                high = item.le
        return bounded(kind, low, low_inclusive, high, high_inclusive)
    return str


def _default_text(field) -> str:
    default = field.get_default(call_default_factory=True)
    if isinstance(default, list):
        return ",".join(map(str, default))
    return "none" if default is None else str(default)


def none_or(parse):
    """An argparse type: ``none`` (any case) for an empty list or no value, else ``parse(text)``."""
    def parse_or_none(text: str):
        return "none" if text.strip().lower() == "none" else parse(text)
    return parse_or_none


def add_config_flags(parser: argparse.ArgumentParser, config_class: type[BaseModel], fields: list[str],
                     flags: dict[str, str] | None = None, default_texts: dict[str, str] | None = None) -> None:
    """Add a flag per field of ``config_class``; ``flags`` renames some (e.g. {"tasks": "--task"}).

    ``default_texts`` replaces the default shown in the help of some fields (where a preset sets it).
    Lists and optional fields take ``none`` (an empty list, no value), so a preset's value can be undone.
    """
    for name in fields:
        field = config_class.model_fields[name]
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        help_text = field.description or ""
        kind, optional = _field_type(field)
        shown = (default_texts or {}).get(name) or _default_text(field)
        if kind is bool:
            default = field.get_default()
            if default:  # the flag turns the field off, so its help says what turning it off does
                help_text = (field.json_schema_extra or {}).get("off_help") or f"Turn off (default on): {help_text}"
            parser.add_argument(flag, dest=name, action="store_false" if default else "store_true",
                                default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
            continue
        options: dict = {"dest": name, "default": argparse.SUPPRESS,
                         "help": f"{help_text} (default {shown})".replace("%", "%%")}
        if typing.get_origin(kind) is Literal:
            options["choices"] = list(typing.get_args(kind))
        elif typing.get_origin(kind) is list:
            item = typing.get_args(kind)[0]
            options["type"] = none_or(list_of(_scalar_parser(item, []) if item in (int, float) else str))
            options["metavar"] = "A,B,..."
        else:
            options["type"] = _scalar_parser(kind, field.metadata)
            options["metavar"] = flag.lstrip("-").replace("-", "_").upper()  # the flag's name, not the field's
            if optional:
                options["type"] = none_or(options["type"])
        parser.add_argument(flag, **options)


def config_values(args: argparse.Namespace, config_class: type[BaseModel]) -> dict:
    """The values the user gave on the command line for fields of ``config_class`` (``none`` made [] or None)."""
    values = {name: value for name, value in vars(args).items() if name in config_class.model_fields}
    for name, value in values.items():
        kind, optional = _field_type(config_class.model_fields[name])
        if value == "none" and typing.get_origin(kind) is list:
            values[name] = []
        elif value == "none" and optional and typing.get_origin(kind) is not Literal:
            values[name] = None
    return values


def config_from_args(config_class: type[BaseModel], args: argparse.Namespace, **fixed):
    """``config_class`` built from the flags given (others keep the config's defaults) and ``fixed``."""
    return make_config(config_class, {**config_values(args, config_class), **fixed})


def make_config(config_class: type[BaseModel], values: dict):
    """``config_class(**values)``, a validation failure turned into one line naming the flag."""
    try:
        return config_class(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a check of several fields together names its flags itself
            raise DemsegError(message) from exc
        where = "--" + "-".join(str(part) for part in first["loc"][:1]).replace("_", "-")
        raise DemsegError(f"{where}: {message}") from exc
