"""``cotprompt completion {bash,zsh,tcsh}`` (issue 15): shtab's script of the whole command line,
path options completing as files or folders, and a one-line error without shtab."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cotprompt.cli import build_parser, main
from cotprompt.cli.completion import SHELLS, completion_script
from cotprompt.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")


def commands() -> list[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(subparsers.choices)


def script(capsys: pytest.CaptureFixture[str], shell: str) -> str:
    capsys.readouterr()
    assert main(["completion", shell]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def complete_in_bash(script_file: Path, words: list[str], cwd: Path) -> list[str]:
    """What bash offers for the last of ``words`` (``cotprompt ...``), with the script loaded."""
    array = " ".join(f"'{w}'" for w in words)
    code = (f"source '{script_file}'; COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; "
            "_shtab_cotprompt; printf '%s\\n' \"${COMPREPLY[@]}\"")
    proc = subprocess.run([BASH, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return sorted(line for line in proc.stdout.splitlines() if line)


needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


@needs_bash
def test_bash_script_is_valid_and_names_every_command(capsys, tmp_path):
    text = script(capsys, "bash")
    path = tmp_path / "cotprompt.bash"
    path.write_text(text)
    proc = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    subcommands = next(line for line in text.splitlines()
                       if line.startswith("_shtab_cotprompt_subparsers="))
    assert subcommands.split("=", 1)[1].strip("()").split() == commands()


@needs_bash
def test_bash_completes_commands_files_and_folders(capsys, tmp_path):
    path = tmp_path / "cotprompt.bash"
    path.write_text(script(capsys, "bash"))
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    (work / "config.yaml").write_text("{}")
    assert complete_in_bash(path, ["cotprompt", "tr"], work) == ["train"]
    assert complete_in_bash(path, ["cotprompt", "completion", ""], work) == sorted(SHELLS)
    # --config FILE: files (and folders, to descend); --output DIR: folders only
    assert complete_in_bash(path, ["cotprompt", "train", "--config", ""], work) == \
        ["config.yaml", "runs"]
    assert complete_in_bash(path, ["cotprompt", "train", "--output", ""], work) == ["runs"]
    assert complete_in_bash(path, ["cotprompt", "eval", ""], work) == ["runs"]  # ARTIFACT


def test_path_options_complete_as_files_or_folders_in_zsh_and_tcsh(capsys):
    zsh = script(capsys, "zsh")
    assert zsh.startswith("#compdef cotprompt")
    for command in commands():
        assert command in zsh
    config = next(line for line in zsh.splitlines() if '"--config[' in line)
    output = next(line for line in zsh.splitlines() if '"--output[' in line)
    assert config.rstrip().endswith(':_files"') and output.rstrip().endswith(':_files -/"')
    tcsh = script(capsys, "tcsh")
    assert "complete cotprompt" in tcsh and "'n/--config/f/'" in tcsh


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses(capsys, tmp_path):
    path = tmp_path / "_cotprompt"
    path.write_text(script(capsys, "zsh"))
    proc = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_an_unknown_shell_is_refused(capsys):
    capsys.readouterr()
    assert main(["completion", "fish"]) == 2
    assert "invalid choice: 'fish'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no completion for shell 'fish'"):
        completion_script(build_parser(), "fish")


def test_without_shtab_one_line_names_the_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["shtab"] = None  # import shtab raises ImportError, as when not installed
        from cotprompt.cli import main
        sys.exit(main(["completion", "bash"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=dict(os.environ))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: shell completion needs shtab, which is not installed: "
        'pip install "shtab>=1.7" (the extra "completion")'
    ]
