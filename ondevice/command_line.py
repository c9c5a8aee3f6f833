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
import difflib
import importlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any, NoReturn

CONFIG_FLAGS = ("-c", "--config")
# The one spelling of each idea that Lightning spells its own way, and Lightning's spelling kept as a warned alias.
LIGHTNING_SPELLINGS = {"--checkpoint": "--ckpt_path"}
LIGHTNING_ALIASES = {lightning: ours for ours, lightning in LIGHTNING_SPELLINGS.items()}


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


# ------------------------------------------------------------------------------------ the one CLI grammar
# The flags every command spells alike, with one default each (README, "One command-line grammar").
DEFAULT_BACKENDS = ("torch", "onnxruntime")
DEFAULT_THREADS = (1,)


def default_out(prog: str, command: str) -> str:
    """The folder a command writes to when ``--out`` is not given: ``runs/<prog>-<command>``."""
    return f"runs/{prog}-{command}"


def add_out_flag(parser: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """``--out``: where a command writes; required when ``default`` is ``None`` (an artefact the user names)."""
    said = f" (default {default})" if default else ""
    parser.add_argument("--out", required=default is None, default=default, metavar="PATH", help=what + said)


def add_model_flag(parser: argparse.ArgumentParser, what: str, *, required: bool = True) -> None:
    """``--model`` (repeatable, or commas): the models a command works on, into ``args.models``."""
    parser.add_argument(
        "--model", dest="models", action="extend", type=names, required=required, metavar="MODEL",
        default=None if required else [], help=f"{what}; repeat the flag or separate by commas",
    )  # fmt: skip


def add_runtime_flags(parser: argparse.ArgumentParser, *, backends: str, one_thread_count: bool = False) -> None:
    """``--backends`` (default torch,onnxruntime), ``--threads`` (default 1) and ``--int8`` (add the int8 twins)."""
    parser.add_argument(
        "--backends", type=names, default=list(DEFAULT_BACKENDS),
        help=f"comma-separated: {backends} (default {','.join(DEFAULT_BACKENDS)})",
    )  # fmt: skip
    each = "one thread count" if one_thread_count else "comma-separated thread counts, e.g. 1,2"
    parser.add_argument("--threads", type=positive_ints, default=list(DEFAULT_THREADS), help=f"{each} (default 1)")
    parser.add_argument("--int8", action="store_true", help="also time the dynamic-int8 twins (onnxruntime-int8)")


def chosen_backends(args: argparse.Namespace) -> list[str]:
    """``--backends`` with ``onnxruntime-int8`` added when ``--int8`` was given."""
    extra = ["onnxruntime-int8"] if args.int8 and "onnxruntime-int8" not in args.backends else []
    return [*args.backends, *extra]


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
        aliases: old flag spellings and the one spelling each now has (``{"--models": "--model"}``); an old one is
            rewritten before parsing, with a warning on stderr.
    """

    help: str
    run: str
    arguments: str | None = None
    description: str | None = None
    passthrough: bool = False
    context: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)


def run_lightning(lightning_main: str, package: str, args: list[str]) -> int:
    """Run a LightningCLI (``lightning_main``, ``"module:function"``) on ``args``, shipped config names resolved.

    LightningCLI reads ``sys.argv`` when given no arguments (and warns when given both), so the resolved command line
    is put where it looks for it. The house spellings (``--checkpoint``) become Lightning's (``--ckpt_path``) here.
    The LightningCLI refuses a remote ``ckpt_path`` once it has parsed the command line and config files alike
    (:func:`ondevice.checkpoint_paths.check_cli_ckpt_path`), before the Trainer could fetch it.
    """
    args = [LIGHTNING_SPELLINGS.get(flag, flag) + eq + value for flag, eq, value in (a.partition("=") for a in args)]
    with as_argv(resolve_configs(args, package)):
        _resolve(lightning_main)(None)
    return 0


def lightning_commands(package: str, lightning_main: str, names: Sequence[str]) -> dict[str, Subcommand]:
    """The LightningCLI subcommands of ``package``'s command (``fit`` …), and ``configs``, which lists what ``-c``
    can name."""
    line = f"LightningCLI {{}}; -c takes a YAML file or a shipped config's name (`{package} configs`)"
    commands = {
        name: Subcommand(line.format(name), "ondevice.command_line:run_lightning", passthrough=True,
                         context=(lightning_main, package), aliases=LIGHTNING_ALIASES)
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


class ToolParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line, ``PROG: error: …; see PROG --help``, exit code 2, and
    whose unknown flags get the closest known one (``--per_key`` → ``--per-key``)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            hints = [hint for token in message.split(":", 1)[1].split() if (hint := self.flag_hint(token))]
            message = "; ".join([message, *hints])
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def flag_hint(self, token: str) -> str | None:
        """``did you mean --per-key?`` for an unknown ``--per_key`` (or a near miss); ``None`` when nothing is close."""
        if not token.startswith("--"):
            return None
        flag = token.partition("=")[0]
        known = [option for option in self._option_string_actions if option.startswith("--")]
        dashed = flag.replace("_", "-")
        close = [dashed] if dashed in known else difflib.get_close_matches(dashed, known, n=2, cutoff=0.7)
        return f"{flag}: did you mean {' or '.join(close)}?" if close else None


def rename_aliases(prog: str, args: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """``args`` with every old flag spelling in ``aliases`` (``--models`` or ``--models=…``) replaced by its one
    spelling, each replacement announced once on stderr."""
    renamed: list[str] = []
    warned: set[str] = set()
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in aliases:
            new = aliases[flag]
            if flag not in warned:
                print(f"{prog}: warning: {flag} is now spelled {new}; the old spelling will go", file=sys.stderr)
                warned.add(flag)
            arg = f"{new}{eq}{value}"
        renamed.append(arg)
    return renamed


def _top_parser(prog: str, description: str, commands: Mapping[str, Subcommand]) -> argparse.ArgumentParser:
    parser = ToolParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {version_of()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in commands.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def subcommand_parser(prog: str, name: str, command: Subcommand) -> argparse.ArgumentParser:
    """The full parser of one subcommand (its ``arguments`` function imported now)."""
    parser = ToolParser(prog=f"{prog} {name}", description=command.description or command.help)
    if command.arguments:
        _resolve(command.arguments)(parser)
    return parser


def _run(prog: str, command: Subcommand, *args: Any) -> int:
    """``command.run(*context, *args)``; a user's mistake (:func:`ondevice.errors.user_error`) becomes one line on
    stderr and exit code 2, wherever it was raised and however it was wrapped."""
    from ondevice.errors import one_line, user_error

    try:
        return int(_resolve(command.run)(*command.context, *args) or 0)
    except Exception as exc:
        cause = user_error(exc)
        if cause is None:
            raise
        print(f"{prog}: error: {one_line(cause)}", file=sys.stderr)
        return 2


def dispatch(prog: str, description: str, commands: Mapping[str, Subcommand], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) against ``commands`` and run the chosen one; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in commands:
        command = commands[args[0]]
        args = [args[0], *rename_aliases(f"{prog} {args[0]}", args[1:], command.aliases)]
        if command.passthrough:
            return _run(f"{prog} {args[0]}", command, args)
    try:
        if not args or args[0] not in commands:
            # Only the table is needed here: --help, --version, no command or an unknown one (argparse says which).
            _top_parser(prog, description, commands).parse_args(args)
            return 2  # not reached: parse_args exits for each of these
        parsed = subcommand_parser(prog, args[0], commands[args[0]]).parse_args(args[1:])
    except SystemExit as done:  # argparse's --help, --version and usage errors: their exit code, as a return value
        return done.code if isinstance(done.code, int) else 0
    parsed.command = args[0]
    return _run(f"{prog} {args[0]}", commands[args[0]], parsed)
