"""Every verb's help ends with examples, and each example is a command line the parser
takes (up to a shell's `>` or `|`)."""

from __future__ import annotations

import argparse
import shlex

from torchd.cli.main import build_parser


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_verb_has_examples_the_parser_takes() -> None:
    parser = build_parser()
    for name, command in _verbs().items():
        epilog = command.epilog or ""
        examples = [line.strip() for line in epilog.splitlines()[1:] if line.strip()]
        assert epilog.startswith("examples:"), name
        assert examples, name
        for example in examples:
            words = shlex.split(example)
            for stop in (">", "|"):
                words = words[:words.index(stop)] if stop in words else words
            assert words[:2] == ["torchd", name], example
            parser.parse_args(words[1:])  # exits (SystemExit) on a bad example
