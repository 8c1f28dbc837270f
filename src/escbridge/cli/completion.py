"""`escbridge completion bash|zsh`: the shell completion script, generated from the real parser.

The script is written by shtab from the same argparse parser that runs the commands, so a new
command or option completes as soon as it exists; nothing is kept by hand. Options that take a
file (``--config``, ``--matrix``, ``-o``, a ticket FILE …) complete file names, ``init``'s
directory completes folders; the rest complete their choices, or nothing.
"""

from __future__ import annotations

import argparse
import sys

from escbridge.cli._common import EXIT_OK

__all__ = ["SHELLS", "completion_script", "configure_completion_parser", "run_completion"]

SHELLS = ("bash", "zsh")

#: Arguments that name a file, by their destination or the metavar their help shows.
_FILE_DESTS = frozenset({"config", "matrix", "path", "output", "write_config"})
_FILE_METAVARS = frozenset({"FILE", "PATH"})
_DIRECTORY_DESTS = frozenset({"directory"})

INSTALL = """\
install, once, then open a new shell:
  bash: mkdir -p ~/.local/share/bash-completion/completions
        escbridge completion bash > ~/.local/share/bash-completion/completions/escbridge
        (that folder needs the bash-completion package; without it, add to ~/.bashrc:
        eval "$(escbridge completion bash)")
  zsh:  mkdir -p ~/.zfunc && escbridge completion zsh > ~/.zfunc/_escbridge
        and in ~/.zshrc, before compinit runs: fpath=(~/.zfunc $fpath)"""


def configure_completion_parser(p: argparse.ArgumentParser) -> None:
    p.description = (  # lines broken by hand: the raw formatter keeps the epilog's layout
        "Print the completion script for bash or zsh, generated from escbridge's own\n"
        "parser: commands, options, their choices, and file names where an option takes\n"
        "a file."
    )
    p.epilog = INSTALL
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def completion_script(shell: str) -> str:
    """The completion script for ``shell``, from every command's parser."""
    import shtab  # only this command needs it

    from escbridge.cli import build_parser

    parser = build_parser(every=True)
    for action in _actions(parser):
        if action.dest in _DIRECTORY_DESTS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif action.dest in _FILE_DESTS or action.metavar in _FILE_METAVARS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument of the parser and of its subcommands, at any depth (`db upgrade`)."""
    found: list[argparse.Action] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found.extend(_actions(sub))
        elif action.nargs != 0:  # flags take no value: nothing to complete
            found.append(action)
    return found


def run_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell))
    return EXIT_OK
