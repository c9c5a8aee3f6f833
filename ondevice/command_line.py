"""One dispatch style for the three commands (``rfml``, ``slm``, ``ondevice``) and their shared argument types.

A command is a table of subcommands. Each :class:`Subcommand` names, as ``"package.module:function"`` strings, the
function that adds its arguments and the function that runs it; neither module is imported until that subcommand is
chosen, so ``rfml --help`` lists every subcommand without importing torch or Lightning. Subcommands handled by a
LightningCLI (``fit``, ``validate`` …) take the rest of the command line as it is.

This module imports only the standard library: it runs before anything heavy.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

CONFIG_FLAGS = ("-c", "--config")


def positive_ints(text: str) -> list[int]:
    """argparse type: positive integers separated by commas (``1,2,4``)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def floats(text: str) -> list[float]:
    """argparse type: numbers separated by commas (``2,2.5,3``)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return values


def names(text: str) -> list[str]:
    """argparse type: names separated by commas (``clst,kd_cnn``); blanks dropped."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return values


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (``'{"width": 32}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def shipped_configs(package: str) -> dict[str, Path]:
    """The YAML configs shipped in ``package`` (its ``configs/`` folder), by name: ``clst``, ``data/rml2016.10a``."""
    found: dict[str, Path] = {}
    with resources.as_file(resources.files(package) / "configs") as folder:
        for path in sorted(Path(folder).rglob("*.yaml")):
            found[path.relative_to(folder).with_suffix("").as_posix()] = path
    return found


def list_configs(package: str, args: argparse.Namespace) -> int:
    """``PROG configs``: one line per shipped config, its name (what ``-c`` takes) and its file."""
    for name, path in shipped_configs(package).items():
        print(f"{name:<22} {path}")
    return 0


def resolve_config(value: str, package: str) -> str:
    """The config argument as given, or the path of the config shipped in ``package`` that it names."""
    if Path(value).exists():
        return value
    return str(shipped_configs(package).get(value.removesuffix(".yaml"), value))


def resolve_configs(args: Sequence[str], package: str) -> list[str]:
    """Every ``-c VALUE`` / ``--config=VALUE`` through :func:`resolve_config`; the other arguments as they are."""
    resolved: list[str] = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if i and args[i - 1] in CONFIG_FLAGS:
            arg = resolve_config(arg, package)
        elif eq and flag in CONFIG_FLAGS:
            arg = f"{flag}={resolve_config(value, package)}"
        resolved.append(arg)
    return resolved


@contextlib.contextmanager
def as_argv(args: Sequence[str]) -> Iterator[None]:
    """``sys.argv[1:]`` is ``args`` inside the block (LightningCLI reads it there), restored after."""
    saved = sys.argv
    sys.argv = [saved[0] if saved else "", *args]
    try:
        yield
    finally:
        sys.argv = saved


def _resolve(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Subcommand:
    """One subcommand: its one-line help and where its code lives.

    Args:
        help: the line ``PROG --help`` shows.
        run: ``"module:function"``; called with the parsed ``argparse.Namespace`` (or, for ``passthrough``, with the
            list of arguments after the subcommand's name, the name itself first); returns an exit code.
        arguments: ``"module:function"`` that adds the subcommand's arguments to its ``ArgumentParser``.
        description: the longer text of ``PROG SUBCOMMAND --help`` (default: ``help``).
        passthrough: the subcommand parses its own arguments (a LightningCLI).
        context: leading arguments ``run`` is called with, before the parsed ones (one function can serve several
            commands).
    """

    help: str
    run: str
    arguments: str | None = None
    description: str | None = None
    passthrough: bool = False
    context: tuple[str, ...] = ()


def run_lightning(lightning_main: str, package: str, args: list[str]) -> int:
    """Run a LightningCLI (``lightning_main``, ``"module:function"``) on ``args``, shipped config names resolved.

    LightningCLI reads ``sys.argv`` when given no arguments (and warns when given both), so the resolved command line
    is put where it looks for it.
    """
    with as_argv(resolve_configs(args, package)):
        _resolve(lightning_main)(None)
    return 0


def lightning_commands(package: str, lightning_main: str, names: Sequence[str]) -> dict[str, Subcommand]:
    """The LightningCLI subcommands of ``package``'s command (``fit`` …), and ``configs``, which lists what ``-c``
    can name."""
    line = f"LightningCLI {{}}; -c takes a YAML file or a shipped config's name (`{package} configs`)"
    commands = {
        name: Subcommand(line.format(name), "ondevice.command_line:run_lightning", passthrough=True,
                         context=(lightning_main, package))
        for name in names
    }  # fmt: skip
    commands["configs"] = Subcommand(
        "list the shipped configs (give a name to -c)", "ondevice.command_line:list_configs", context=(package,)
    )
    return commands


def version_of(distribution: str = "ondevice") -> str:
    """The installed distribution's version, or ``unknown`` when run from a tree that was never installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _top_parser(prog: str, description: str, commands: Mapping[str, Subcommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {version_of()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in commands.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def subcommand_parser(prog: str, name: str, command: Subcommand) -> argparse.ArgumentParser:
    """The full parser of one subcommand (its ``arguments`` function imported now)."""
    parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=command.description or command.help)
    if command.arguments:
        _resolve(command.arguments)(parser)
    return parser


def dispatch(prog: str, description: str, commands: Mapping[str, Subcommand], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) against ``commands`` and run the chosen one; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in commands and commands[args[0]].passthrough:
        command = commands[args[0]]
        return int(_resolve(command.run)(*command.context, args) or 0)
    try:
        if not args or args[0] not in commands:
            # Only the table is needed here: --help, --version, no command or an unknown one (argparse says which).
            _top_parser(prog, description, commands).parse_args(args)
            return 2  # not reached: parse_args exits for each of these
        parsed = subcommand_parser(prog, args[0], commands[args[0]]).parse_args(args[1:])
    except SystemExit as done:  # argparse's --help, --version and usage errors: their exit code, as a return value
        return done.code if isinstance(done.code, int) else 0
    parsed.command = args[0]
    command = commands[args[0]]
    return int(_resolve(command.run)(*command.context, parsed) or 0)
