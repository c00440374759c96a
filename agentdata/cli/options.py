"""CLI options generated from `Settings`, so every setting is an option and a variable.

`--flight-port 9000` on the command line beats `AGENTDATA_FLIGHT_PORT`, which beats
`.env`, which beats the default.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from agentdata.settings import Settings


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a Settings field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args else annotation
    if base is bool:
        return bool, True
    if base is int:
        return int, False
    if base is float:
        return float, False
    if base is Path:
        return click.Path(path_type=Path), False
    if base is SecretStr:
        return str, False
    return str, False


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one option per Settings field; the command receives `settings: Settings`."""
    fields = Settings.model_fields

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        overrides = {name: kwargs.pop(name) for name in fields if kwargs.get(name) is not None}
        for name in fields:
            kwargs.pop(name, None)
        return func(settings=Settings(**overrides), **kwargs)

    for name, info in reversed(list(fields.items())):
        ctype, is_flag = _click_type(info.annotation)
        flag = "--" + name.replace("_", "-")
        help_text = f"{info.description} [env: AGENTDATA_{name.upper()}]"
        if is_flag:
            wrapper = click.option(
                f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=help_text
            )(wrapper)
        else:
            wrapper = click.option(flag, name, type=ctype, default=None, help=help_text)(wrapper)
    return wrapper
