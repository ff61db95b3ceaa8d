"""Every `gpufleet ...` command written in README.md and docs/*.md parses against the real CLI.

Checked: each command line that runs `gpufleet` (also as `.venv/bin/gpufleet`, after `sudo` or
`VAR=value`, or after `&&`, `;`, `|`) in a fenced code block, in inline code, or on a prose line
starting with `.venv/bin/gpufleet`. Its subcommand path is resolved through the Typer app's groups
(`typer.main.get_command(app)`, `resolve_command`) and its arguments are parsed by the click that
Typer carries (`make_context`, not resilient). An unknown command, subcommand or option, a missing
required argument, an enum value the command does not take (`cluster dc1 cephx`) or a value that
does not convert (`--repeat two`) fails the test. Nothing is run: parsing stops before any
command's body.

Placeholders: `<site>`, `<stack>`, `<host>` and upper-case words in `PLACEHOLDERS` stand for
sample values (a string argument takes anything, so the sample matters only to typed options).
Usage syntax, as in the README's command table, is expanded: every `[...]` group is included,
each `a|b` alternative is checked in turn, `…`/`...` repeat markers are dropped. Inline code that
names a command without arguments (`gpufleet burst run` in prose) is a mention: only its command
path is checked. In fenced blocks every line is a command, so missing arguments fail there.

Not checked: whether a command succeeds (sites, hosts, stacks or refs exist, values make sense);
other programs' command lines (kubectl, ansible-playbook, pulumi); `python -m gpufleet...`; the
general shape in `TEMPLATES`, which names no command.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from gpufleet.cli import app
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
ROOT = typer.main.get_command(app)

# Words the docs write instead of a value, and a sample value for each.
PLACEHOLDERS = {
    "SITE": "dc1",
    "HOST": "gpu01",
    "NODE": "gpu01",
    "STACK": "dc1-prod",
    "REF": "origin/main",
    "DIR": "plan/dc1-prod",
    "FILE": "trace.csv",
    "URL": "http://127.0.0.1:9090",
    "NAME": "gpufleet",
    "F@START:DUR": "3@20m:20m",
    "F@ISO+DUR": "3@2026-11-27T18:00+20m",
    "H": "2",
    "S": "300",
}
ANGLE_PLACEHOLDERS = {"site": "dc1", "stack": "dc1-prod", "host": "gpu01"}
# The general shape of every command, not a command: nothing to parse.
TEMPLATES = {"gpufleet <verb> <site|stack>"}

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
SHELL_OPERATOR = re.compile(r"\s+(?:&&|\|\||\|)\s+|;(?:\s+|$)")
COMMENT = re.compile(r"(?:^|\s)#.*$")
ANGLE = re.compile(r"<([a-z][a-z-]*)>")
UNKNOWN_ANGLE = re.compile(r"<[^<>\s]+>")
BRACKET = re.compile(r"\[([^\[\]]*)\]")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
REDIRECT = re.compile(r"^(?:[0-9]?>>?|<)(.*)$")
REPEAT = ("…", "...")


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    text: str  # as written, for the test id and the failure message
    inline: bool  # inline code in prose: a bare command name is a mention


def program_words(words: list[str]) -> list[str]:
    """The words from the program on: without `VAR=value` prefixes and `sudo`."""
    while words and (ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
        words = words[1:]
    return words


def gpufleet_segments(text: str) -> list[str]:
    """The simple commands in a shell line that run gpufleet with arguments (`gpufleet` alone names it)."""
    text = COMMENT.sub("", text.replace("\\|", "|"))
    segments = [" ".join(s.split()) for s in SHELL_OPERATOR.split(text)]
    return [s for s in segments if len(w := program_words(s.split())) > 1 and Path(w[0]).name == "gpufleet"]


def collect(path: Path, root: Path = REPO) -> list[DocCommand]:
    """Commands in one Markdown file: fenced blocks, inline code, prose lines of `.venv/bin/gpufleet`."""
    rel = path.relative_to(root)
    found: list[DocCommand] = []
    prose: list[tuple[int, str]] = []
    fenced = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            prose.append((number, line))
            if line.lstrip().startswith(".venv/bin/gpufleet "):
                found += [DocCommand(f"{rel}:{number}", s, False) for s in gpufleet_segments(line)]
            continue
        # A fenced line continued with a backslash is one command with the next.
        start, text = pending if pending else (number, "")
        text += line
        if text.endswith("\\"):
            pending = (start, text[:-1] + " ")
            continue
        pending = None
        found += [DocCommand(f"{rel}:{start}", s, False) for s in gpufleet_segments(text)]
    # Inline code may wrap across lines of a paragraph: search the prose as one text.
    joined = "\n".join(text for _, text in prose)
    offsets = list(itertools.accumulate(len(text) + 1 for _, text in prose))
    for match in INLINE.finditer(joined):
        line = prose[next(i for i, end in enumerate(offsets) if match.start() < end)][0]
        span = " ".join(match.group(2).split())
        found += [DocCommand(f"{rel}:{line}", s, True) for s in gpufleet_segments(span)]
    return found


def expand_usage(text: str) -> list[str]:
    """Usage syntax to concrete command lines: `[x]` included, each `a|b` alternative in turn."""
    group = BRACKET.search(text)
    if group:
        # `[--a X|--b Y]` offers two options; `[--part gpu|network]` one option with two values.
        pieces = group.group(1).split("|")
        whole = len(pieces) > 1 and all(p.strip().startswith("-") for p in pieces[1:])
        return [
            line
            for alternative in (pieces if whole else [group.group(1)])
            for line in expand_usage(text[: group.start()] + alternative + text[group.end() :])
        ]
    words = [w for w in text.split() if w not in REPEAT]
    return [" ".join(choice) for choice in itertools.product(*(w.split("|") for w in words))]


def argv_variants(text: str) -> list[list[str]]:
    """The gpufleet arguments (after the program name) of each concrete line a doc command stands for."""
    text = ANGLE.sub(lambda m: ANGLE_PLACEHOLDERS.get(m.group(1), m.group(0)), text)
    unknown = UNKNOWN_ANGLE.search(text)
    if unknown:
        raise ValueError(f"unknown placeholder {unknown.group(0)}: add it to ANGLE_PLACEHOLDERS")
    usage = any(mark in text for mark in ("[", "|", *REPEAT))
    lines = expand_usage(text) if usage else [text]
    variants = []
    for line in lines:
        words = shlex.split(line) if not usage else line.split()
        argv: list[str] = []
        skip_target = False
        for word in program_words(words)[1:]:
            if skip_target:
                skip_target = False
                continue
            redirect = REDIRECT.match(word)
            if redirect:
                skip_target = not redirect.group(1)
                continue
            argv.append(PLACEHOLDERS.get(word, word))
        variants.append(argv)
    return variants


def parse(argv: list[str], *, mention: bool = False) -> None:
    """Resolve the command path and parse its arguments as the CLI would before running it.

    `mention`: a command named without arguments stops after the path (no required-argument check).
    Raises TyperException (Typer's click: UsageError, BadParameter, ...) for what does not parse.
    """
    command: Any = ROOT
    name, args = "gpufleet", list(argv)
    ctx: Any = None
    while isinstance(command, TyperGroup):
        if not args:
            if mention:
                return
            raise TyperException(f"{name}: missing command")
        ctx = command.make_context(name, args, parent=ctx, resilient_parsing=False)
        # What the group left for its subcommand: the subcommand's name is kept apart.
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        resolved, command, args = command.resolve_command(ctx, rest)
        name = resolved or name
    if mention and not args:
        return
    try:
        command.make_context(name, args, parent=ctx, resilient_parsing=False)
    except typer.Exit as done:  # an eager option such as --help: the command exists
        if done.exit_code:
            raise


ALL = [c for path in DOCS for c in collect(path)]
CHECKED = [c for c in ALL if c.text not in TEMPLATES]


def test_the_docs_name_commands() -> None:
    """The extraction itself works: the README's command table alone names more than a dozen."""
    readme = [c for c in CHECKED if c.where.startswith("README.md:")]
    assert len(readme) >= 14, [c.text for c in readme]
    assert {t for t in TEMPLATES} <= {c.text for c in ALL}, "a template is no longer in the docs"


@pytest.mark.parametrize("doc", CHECKED, ids=[f"{c.where} {c.text}" for c in CHECKED])
def test_doc_command_parses(doc: DocCommand) -> None:
    try:
        variants = argv_variants(doc.text)
    except ValueError as exc:
        pytest.fail(f"{doc.where}: `{doc.text}`: {exc}")
    for argv in variants:
        try:
            parse(argv, mention=doc.inline)
        except TyperException as exc:
            pytest.fail(f"{doc.where}: `{doc.text}` -> gpufleet {shlex.join(argv)}: {exc.format_message()}")


# The checker must catch what it is for: these are wrong, and each must fail to parse.
WRONG = [
    "gpufleet plan-nodes dc1 gpu01",  # no such command
    "gpufleet burst runn burst-prod",  # no such subcommand
    "gpufleet burst runn",  # ... also when only mentioned
    "gpufleet verify dc1 --partt gpu",  # no such option
    "gpufleet provision dc1 --limit",  # option without its value
    "gpufleet plan-node dc1",  # missing HOST
    "gpufleet cluster dc1 cephx",  # not a component
    "gpufleet inventory dc1 --format yaml",  # not a format
    "gpufleet burst simulate --hours two",  # not a number
    "gpufleet validate dc1 lab",  # one argument too many
    "gpufleet cluster SITE [ceph|kubernetess|all]",  # one bad alternative in usage syntax
]


@pytest.mark.parametrize("text", WRONG)
def test_a_wrong_command_fails(text: str) -> None:
    with pytest.raises(TyperException):
        for argv in argv_variants(text):
            parse(argv, mention=True)


def test_extraction_from_markdown(tmp_path: Path) -> None:
    doc = tmp_path / "page.md"
    doc.write_text(
        "Run `gpufleet validate <site>`, then `gpufleet plan-node\nSITE HOST`; see `gpufleet.io/x`.\n"
        "| `gpufleet lab up\\|down [--site SITE]` | table |\n"
        ".venv/bin/gpufleet stacks --json\n"
        "```sh\n"
        "GPUFLEET_SITE=dc1 sudo .venv/bin/gpufleet provision dc1 \\\n"
        "    --limit gpu01 --dry-run  # a comment\n"
        "make x && gpufleet plan dc1-prod --out plan/<stack> > out.txt\n"
        "EC2 ──> SQS ──> gpufleet burst run\n"
        "```\n"
    )
    found = [(c.text, c.inline) for c in collect(doc, tmp_path)]
    assert found == [
        (".venv/bin/gpufleet stacks --json", False),
        ("GPUFLEET_SITE=dc1 sudo .venv/bin/gpufleet provision dc1 --limit gpu01 --dry-run", False),
        ("gpufleet plan dc1-prod --out plan/<stack> > out.txt", False),
        ("gpufleet validate <site>", True),
        ("gpufleet plan-node SITE HOST", True),
        ("gpufleet lab up|down [--site SITE]", True),
    ]
    assert argv_variants("gpufleet lab up|down [--site SITE]") == [
        ["lab", "up", "--site", "dc1"],
        ["lab", "down", "--site", "dc1"],
    ]
    assert argv_variants("gpufleet plan dc1-prod --out plan/<stack> > out.txt") == [
        ["plan", "dc1-prod", "--out", "plan/dc1-prod"]
    ]
