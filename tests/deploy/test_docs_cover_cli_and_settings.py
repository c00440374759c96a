"""The docs keep up with the code: every CLI command, option, setting and metric is
documented, and nothing the docs name is made up.

Written against the click group and the Settings class, not a list: a command, option
or setting added later fails here until docs/api.md (or the README, for settings)
describes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest

from agentdata.cli import cli
from agentdata.settings import Settings
from tests.deploy import API_DOC, DEPLOYMENT_DOC, ENV_EXAMPLE, REPO

README = REPO / "README.md"
SETTING_FLAGS = {"--" + name.replace("_", "-") for name in Settings.model_fields}


def _commands(
    group: click.Group = cli, path: tuple[str, ...] = ("agentdata",)
) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        full = (*path, name)
        yield " ".join(full), command
        if isinstance(command, click.Group):
            yield from _commands(command, full)


COMMANDS = dict(_commands())


def _sections(text: str) -> dict[str, str]:
    """Heading text (backticks stripped) -> the text under it, up to the next heading."""
    sections: dict[str, str] = {}
    # A "# comment" inside a code block is no heading.
    text = re.sub(
        r"^```.*?^```",
        lambda m: re.sub(r"^#", " #", m.group(0), flags=re.M),
        text,
        flags=re.M | re.S,
    )
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        sections[heading.lstrip("#").strip().replace("`", "")] = body
    return sections


def _section_of(path: str) -> str | None:
    """The section whose heading is the command, optionally followed by its arguments."""
    for heading, body in _sections(API_DOC.read_text()).items():
        words = heading.split()
        command_words = [w for w in words if re.fullmatch(r"[a-z][a-z-]*", w)]
        rest = words[len(command_words) :]
        prefix = words[: len(command_words)] == command_words
        arguments_only = all(re.fullmatch(r"[A-Z_\[\]<>.]+", w) for w in rest)
        if prefix and arguments_only and " ".join(command_words) == path:
            return body
    return None


def _documented_options(command: click.Command) -> list[str]:
    """The options a reader must find in the command's section (settings are covered apart)."""
    options = [p for p in command.params if isinstance(p, click.Option)]
    takes_every_setting = {o for p in options for o in p.opts} >= SETTING_FLAGS
    names = []
    for option in options:
        if takes_every_setting and set(option.opts) & SETTING_FLAGS:
            continue
        longs = [o for o in option.opts if o.startswith("--")]
        names.append(max(longs, key=len) if longs else option.opts[0])
    return names


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_has_a_section_in_api_md(path: str) -> None:
    assert _section_of(path) is not None, f"docs/api.md has no '### `{path} ...`' section"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_option_is_in_its_commands_section(path: str) -> None:
    section = _section_of(path)
    if section is None:
        pytest.fail(f"docs/api.md has no section for {path}")
    missing = [o for o in _documented_options(COMMANDS[path]) if f"`{o}`" not in section]
    assert missing == [], f"{path}: options not documented in its section"
    options = {o for p in COMMANDS[path].params if isinstance(p, click.Option) for o in p.opts}
    if options >= SETTING_FLAGS:
        assert "every setting" in section, f"{path} takes every setting: say so"


def test_root_options_are_documented() -> None:
    for param in cli.params:
        if isinstance(param, click.Option):
            assert f"agentdata {param.opts[0]}" in API_DOC.read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    variable = f"AGENTDATA_{name.upper()}"
    assert f"`{variable}`" in API_DOC.read_text() + README.read_text(), variable


def _cli_envvars() -> set[str]:
    found = set()
    for command in [cli, *COMMANDS.values()]:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                found.add(envvar)
    return found


def test_no_doc_names_a_variable_that_does_not_exist() -> None:
    known = {f"AGENTDATA_{n.upper()}" for n in Settings.model_fields} | _cli_envvars()
    for doc in (API_DOC, DEPLOYMENT_DOC, README, ENV_EXAMPLE):
        named = set(re.findall(r"\bAGENTDATA_[A-Z0-9_]*[A-Z0-9]\b", doc.read_text()))
        assert named - known == set(), f"{doc.name} names unknown variables"


def test_metrics_in_the_operations_guide_are_the_registered_ones() -> None:
    from agentdata.metrics import REGISTRY

    registered = {
        metric.name.removesuffix("_total")
        for metric in REGISTRY.collect()
        if metric.name.startswith("agentdata_")
    }
    text = DEPLOYMENT_DOC.read_text()
    named = {
        n.removesuffix("_total").removesuffix("_bucket")
        for n in re.findall(r"\bagentdata_[a-z_]+[a-z]\b", text)
    }
    named = {n for n in named if not n.startswith("agentdata_agentdata")}  # a volume name
    assert registered - named == set(), "metrics missing from docs/deployment.md"
    assert named - registered == set(), "docs/deployment.md names metrics that do not exist"


def _code(text: str) -> str:
    """Fenced blocks and inline code spans: where commands are written."""
    fenced = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    return "\n".join(fenced + inline)


def test_commands_written_in_the_docs_exist() -> None:
    for doc in (API_DOC, DEPLOYMENT_DOC, README):
        for match in re.finditer(
            r"(?<![\w/.-])agentdata ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", _code(doc.read_text())
        ):
            first, second = match.group(1), match.group(2)
            assert first in cli.commands, f"{doc.name}: `agentdata {first}` is not a command"
            command = cli.commands[first]
            if isinstance(command, click.Group) and second is not None:
                assert second in command.commands, f"{doc.name}: `agentdata {first} {second}`"
