"""Every numeric and path option of every subcommand is checked when the command line is
parsed: a bad value is exit status 2 and one line on stderr, never a traceback. The table
of cases is generated from the parsers themselves, so a new option is covered (or the test
says it has no checked type)."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mobilevt.cli import values
from mobilevt.cli.main import COMMANDS, build_parser, main

PARSER = build_parser()
SUBPARSERS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices

# options that take free text: names, weights sources, recipe names, questions
FREE_TEXT = {
    ("models", "pattern"),
    ("bench", "models"),
    ("train", "--config"),
    ("vqa", "question"),
    ("export", "model"),
    *((c, "--model") for c in ("predict", "evaluate", "segment", "detect")),
    *((c, "--weights") for c in ("predict", "evaluate", "export", "vqa", "segment", "detect")),
    *((c, "inputs") for c in ("predict", "segment", "detect")),  # missing ones: one error line each, the rest run
    *((c, "--split") for c in ("segment", "detect")),
}


def _options():
    for command, parser in SUBPARSERS.items():
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreConstAction)):
                continue
            yield command, (action.option_strings[-1] if action.option_strings else action.dest), action


OPTIONS = list(_options())


def _bad_values(action, tmp_path) -> list[str]:
    missing, folder, file = str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "file.txt")
    (tmp_path / "file.txt").write_text("x")
    if action.choices:
        return ["bogus"]
    return {
        values.positive_int: ["0", "-3", "1.5", "many", ""],
        values.non_negative_int: ["-1", "x", "2.0"],
        values.fraction: ["0", "1.5", "-0.2", "nan", "half"],
        values.probability: ["-0.1", "1.01", "inf", "x"],
        values.ONNX_OPSET: ["8", "24", "x"],
        values.existing_file: [missing, folder],
        values.existing_dir: [missing, file],
        values.existing_path: [missing],
        values.writable_target: [folder, ""],
        values.folder_target: [file, ""],
        values.comma_list: [",", " , "],
        values.json_object: ["{", "[1]", "3"],
        values.device: ["gpu", "cuda:x", ""],
        values.key_value: ["epochs", "=5"],
    }[action.type]


def _base_argv(command: str, tmp_path) -> list[str]:
    """The fewest arguments that make ``command`` parse, so the option under test is reached."""
    image = tmp_path / "photo.png"
    image.write_bytes(b"not decoded at parse time")
    return {
        "predict": [str(image)],
        "evaluate": ["--data", str(tmp_path)],
        "export": ["mobilevit_xxs", "--format", "onnx", "-o", str(tmp_path / "x.onnx")],
        "vqa": [str(image), "what is it?"],
    }.get(command, [])


def test_every_option_that_is_not_free_text_has_a_checked_type():
    unchecked = [
        (command, name)
        for command, name, action in OPTIONS
        if (command, name) not in FREE_TEXT and not action.choices and action.type not in _TYPES
    ]
    assert not unchecked, f"options without a checked type (add one from mobilevt.cli.values): {unchecked}"
    assert {c.name for c in COMMANDS} == set(SUBPARSERS)


_TYPES = {
    values.positive_int,
    values.non_negative_int,
    values.fraction,
    values.probability,
    values.ONNX_OPSET,
    values.existing_file,
    values.existing_dir,
    values.existing_path,
    values.writable_target,
    values.folder_target,
    values.comma_list,
    values.json_object,
    values.device,
    values.key_value,
}


@pytest.mark.parametrize(
    ("command", "name"),
    [(c, n) for c, n, a in OPTIONS if (c, n) not in FREE_TEXT],
    ids=[f"{c} {n}" for c, n, a in OPTIONS if (c, n) not in FREE_TEXT],
)
def test_a_bad_value_is_one_line_and_exit_2(command, name, tmp_path, capsys):
    action = next(a for c, n, a in OPTIONS if (c, n) == (command, name))
    for bad in _bad_values(action, tmp_path):
        if action.option_strings:
            argv = [command, *_base_argv(command, tmp_path), f"{name}={bad}"]
        else:  # a positional: the bad value in its place
            base = _base_argv(command, tmp_path)
            argv = [command, bad, *base[1:]] if base else [command, bad]
        with pytest.raises(SystemExit) as exited:
            main(argv)
        err = capsys.readouterr().err
        assert exited.value.code == 2, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert f"mobilevt {command}: error: argument" in err and "--help" in err, (argv, err)


@pytest.mark.parametrize(
    ("command", "name"),
    [(c, n) for c, n, a in OPTIONS if a.option_strings and (a.type in _TYPES or a.choices)],
    ids=[f"{c} {n}" for c, n, a in OPTIONS if a.option_strings and (a.type in _TYPES or a.choices)],
)
def test_random_text_is_accepted_or_refused_in_one_line(command, name, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("base")
    base = [command, *_base_argv(command, tmp_path)]
    action = next(a for c, n, a in OPTIONS if (c, n) == (command, name))

    @settings(max_examples=40, derandomize=True, deadline=None)
    @given(st.text(max_size=30))
    def check(text):
        try:
            parsed = getattr(PARSER.parse_args([*base, f"{name}={text}"]), action.dest)
        except SystemExit as exited:  # refused: argparse's exit, nothing else escapes
            assert exited.code == 2
            return
        parsed = parsed[-1] if isinstance(parsed, list) and action.nargs is not None else parsed
        if action.choices:
            assert parsed in action.choices
        else:
            assert parsed == action.type(text)

    check()


def test_help_and_version_and_a_mistyped_command_need_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mobilevt.cli.main import main\n"
        "for argv in (['--version'], ['--help'], ['prdict']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "mobilevt 0" in result.stdout and "predict" in result.stdout
    assert "invalid choice: 'prdict'" in result.stderr and result.stderr.count("\n") == 1
