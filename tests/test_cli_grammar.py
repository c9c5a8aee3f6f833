"""The one command-line grammar of rfml, slm and ondevice: the same flags and defaults, one-line errors with exit code 2
for a user's mistakes (through the installed console scripts), hints for typos, warned aliases, help on every flag."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from ondevice import cli as ondevice_cli
from ondevice.command_line import dispatch, lightning_commands, subcommand_parser
from rfml import cli as rfml_cli
from slm import cli as slm_cli

BIN = Path(sys.executable).parent
COMMANDS = {"rfml": rfml_cli.COMMANDS, "slm": slm_cli.COMMANDS, "ondevice": ondevice_cli.COMMANDS}


def run(prog: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / prog), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# A user's mistake, the one line it must give (its start, and a phrase naming the choices or the thing).
MISTAKES = [
    (("rfml", "export", "--model", "kd_cnnn", "--out", "x.onnx"), "rfml export: error: unknown model 'kd_cnnn'",
     "did you mean kd_cnn?"),
    (("rfml", "profile", "--model", "kd_cnnn"), "rfml profile: error: unknown model 'kd_cnnn'", "kd_mobilenet"),
    (("rfml", "fit", "-c", "kd_cnn", "--model.init_args.model", "kd_cnnn", "--trainer.fast_dev_run", "true"),
     "rfml fit: error: unknown model 'kd_cnnn'", "did you mean kd_cnn?"),
    (("rfml", "fit", "-c", "kd_cnn", "-c", "data/rml2016.10a", "--trainer.fast_dev_run", "true"),
     "rfml fit: error: data/RML2016.10a_dict.pkl: no such dataset file", "never generated"),
    (("slm", "export", "--checkpoint", "missing.ckpt", "--out", "o"), "slm export: error: ",
     "missing.ckpt: no such checkpoint"),
    (("slm", "export", "--model", "tinyy", "--out", "o"), "slm export: error: unknown preset 'tinyy'",
     "did you mean tiny?"),
    (("rfml", "generate", "--preset", "rml2016.10a", "--out", "d/", "--per_key", "3"),
     "rfml generate: error: unrecognized arguments: --per_key 3", "--per_key: did you mean --per-key?"),
    (("ondevice", "profile", "--model", "nowhere.mod:f"), "ondevice profile: error: factory 'nowhere.mod:f'", "import"),
    (("slm", "search", "--budget", "40M"), "slm search: error: budget '40M' must be MIN:MAX", "40e6:60e6"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "start", "names"), MISTAKES, ids=[" ".join(m[0][:3]) for m in MISTAKES])
def test_each_mistake_is_one_line_and_exit_code_2_through_the_console_script(tmp_path, argv, start, names):
    done = run(*argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith(start), lines[0]
    assert names in lines[0]
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "d").exists()  # nothing written


def test_old_spellings_still_work_and_say_the_new_one(tmp_path):
    done = run("rfml", "profile", "--models", "kd_cnnn", cwd=tmp_path)
    assert error_lines(done.stderr) == [
        "rfml profile: warning: --models is now spelled --model; the old spelling will go",
        *error_lines(run("rfml", "profile", "--model", "kd_cnnn", cwd=tmp_path).stderr),
    ]
    done = run("slm", "profile", "--preset", "tinyy", "--config", "x.yaml", cwd=tmp_path)
    warnings = [line for line in error_lines(done.stderr) if "warning" in line]
    assert warnings == [
        "slm profile: warning: --preset is now spelled --model; the old spelling will go",
        "slm profile: warning: --config is now spelled --model; the old spelling will go",
    ]
    done = run("ondevice", "profile", "nowhere.mod:f", cwd=tmp_path)  # positional factories: the older form
    assert error_lines(done.stderr)[0] == (
        "ondevice profile: warning: give models as --model FACTORY; positional ones will go"
    )
    assert done.returncode == 2


def _record_argv(args: object) -> None:
    _record_argv.seen = list(sys.argv[1:])  # type: ignore[attr-defined]


def test_checkpoint_is_the_one_spelling_and_lightning_gets_its_own(capsys):
    commands = lightning_commands("rfml", "test_cli_grammar:_record_argv", ("test",))
    assert dispatch("rfml", "", commands, ["test", "--checkpoint", "a.ckpt"]) == 0
    assert _record_argv.seen == ["test", "--ckpt_path", "a.ckpt"]  # type: ignore[attr-defined]
    assert capsys.readouterr().err == ""
    assert dispatch("rfml", "", commands, ["test", "--ckpt_path=b.ckpt"]) == 0
    assert _record_argv.seen == ["test", "--ckpt_path=b.ckpt"]  # type: ignore[attr-defined]
    assert "rfml test: warning: --ckpt_path is now spelled --checkpoint" in capsys.readouterr().err


def _all_parsers(prog: str, name: str, parser: argparse.ArgumentParser):
    yield f"{prog} {name}", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _all_parsers(prog, f"{name} {sub_name}", sub)


def test_every_flag_of_every_tool_subcommand_has_help():
    missing = []
    for prog, commands in COMMANDS.items():
        for name, command in commands.items():
            if command.passthrough:
                continue  # LightningCLI's own help
            for where, parser in _all_parsers(prog, name, subcommand_parser(prog, name, command)):
                for action in parser._actions:
                    if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                        continue
                    if action.help is argparse.SUPPRESS:
                        continue
                    if not (action.help or "").strip():
                        missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def _parse(prog: str, name: str, *args: str) -> argparse.Namespace:
    return subcommand_parser(prog, name, COMMANDS[prog][name]).parse_args(list(args))


def test_the_same_idea_has_the_same_flag_and_default_in_all_three():
    profiles = {
        "rfml": _parse("rfml", "profile", "--model", "kd_cnn"),
        "slm": _parse("slm", "profile", "--model", "tiny"),
        "ondevice": _parse("ondevice", "profile", "--model", "ondevice.examples:small_cnn"),
    }
    for prog, args in profiles.items():
        assert (args.backends, args.threads, args.int8) == (["torch", "onnxruntime"], [1], False), prog
        assert args.out == f"runs/{prog}-profile", prog
    assert profiles["rfml"].models == ["kd_cnn"]
    assert _parse("rfml", "profile", "--model", "kd_cnn,clst", "--model", "resnet").models == [
        "kd_cnn",
        "clst",
        "resnet",
    ]
    assert _parse("slm", "search").threads == [1]
    assert _parse("slm", "search").out is None  # runs/slm-search, or beside the results with --ingest
    # int8 is opt-in everywhere; --checkpoint names a trained model in both exports.
    exports = {
        "rfml": _parse("rfml", "export", "--checkpoint", "a.ckpt", "--out", "a.onnx"),
        "slm": _parse("slm", "export", "--checkpoint", "a.ckpt", "--out", "o"),
    }
    assert [(a.int8, a.checkpoint) for a in exports.values()] == [(False, "a.ckpt")] * 2
    assert _parse("ondevice", "bundle", "--model", "m:f", "--out", "b").int8 is False
    assert _parse("rfml", "profile", "--model", "kd_cnn", "--int8").int8 is True


def test_int8_flag_adds_the_int8_backend_once():
    from ondevice.command_line import chosen_backends

    args = _parse("ondevice", "profile", "--model", "m:f", "--int8")
    assert chosen_backends(args) == ["torch", "onnxruntime", "onnxruntime-int8"]
    args = _parse("ondevice", "profile", "--model", "m:f", "--int8", "--backends", "onnxruntime-int8")
    assert chosen_backends(args) == ["onnxruntime-int8"]


@pytest.mark.parametrize("prog", ["rfml", "slm", "ondevice"])
def test_version_on_all_three(tmp_path, prog):
    done = run(prog, "--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"{prog} {metadata.version('ondevice')}"
