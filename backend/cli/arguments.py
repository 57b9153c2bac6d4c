"""Command-line options made from a task's parameters dataclass, so each parameter is declared once."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from contract.tasks import TaskParams


def add_fields(parser: argparse.ArgumentParser, cls: type[TaskParams], skip: tuple[str, ...] = (),
               helps: dict[str, str] | None = None) -> None:
    """``--field-name`` for every scalar field of ``cls`` not in ``skip``, with its type and default; booleans
    also get ``--no-field-name``."""
    hints = typing.get_type_hints(cls)
    added: list[str] = []
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if item.name in skip or kind not in (int, float, str, bool):
            continue
        added.append(item.name)
        flag = "--" + item.name.replace("_", "-")
        default = item.default if item.default is not dataclasses.MISSING else None
        required = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
        text = (helps or {}).get(item.name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        else:
            parser.add_argument(flag, type=kind, default=default, required=required, help=text)
    parser.set_defaults(param_fields=added)


def field_values(args: argparse.Namespace, cls: type[TaskParams], **values: Any) -> TaskParams:
    """``cls`` from the parsed options of ``add_fields`` plus ``values`` (paths, lists); ParamError if invalid."""
    given = {name: getattr(args, name) for name in args.param_fields if getattr(args, name) is not None}
    return cls.from_dict({**given, **values})
