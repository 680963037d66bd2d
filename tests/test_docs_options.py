"""The docs and the CLI name the same options.

The CLI's options come from click introspection of the built app (never from help text): every visible
option of every command, by its long names. Two checks:

* every ``temacli CMD ... --flag`` written in the docs (README.md and docs/*.md, code blocks and inline
  code) uses a flag that command has, spelled as it is now (not a hidden, deprecated alias);
* every option of a command is named on the command's page (``PAGES``). Pages that do not name all their
  command's options yet are listed in ``UNDOCUMENTED`` with the options they miss: the list may only
  shrink (a new option without docs fails), and an entry that is documented by now must be removed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# command path -> the pages that document it
PAGES = {
    "data split": ["data.md"],
    "data stats": ["data.md"],
    "tags generate": ["tags.md", "llm.md"],
    "tags match": ["tags.md", "llm.md"],
    "tags merge": ["tags.md", "llm.md"],
    "features clip": ["features.md"],
    "features text": ["features.md"],
    "train": ["training.md", "model.md"],
    "eval": ["evaluation.md"],
    "recommend": ["recommend.md"],
    "plot": ["plots.md"],
}

# options a page does not name yet (reported to the pages' owners); may only shrink
UNDOCUMENTED: dict[str, set[str]] = {}


def _commands():
    import typer

    from temacli.cli import app

    root = typer.main.get_command(app)
    out = {}

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                if not getattr(sub, "hidden", False):
                    walk(sub, (*path, name))
        else:
            out[" ".join(path)] = cmd

    walk(root, ())
    return root, out


ROOT_CMD, COMMANDS = _commands()


def options(cmd, hidden: bool = False) -> dict[str, tuple[str, ...]]:
    """param name -> its long option names, for the options ``--help`` shows (or the hidden ones)."""
    out = {}
    for p in cmd.params:
        if getattr(p, "param_type_name", "") != "option" or bool(getattr(p, "hidden", False)) != hidden:
            continue
        longs = tuple(o for o in (*p.opts, *getattr(p, "secondary_opts", ())) if o.startswith("--"))
        if longs and "--help" not in longs:
            out[p.name] = longs
    return out


def page_text(names) -> str:
    return "\n".join((DOCS / n).read_text() for n in names)


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def missing_from(text: str, cmd) -> set[str]:
    """The options of ``cmd`` (by first long name) that ``text`` does not name by any of their long names."""
    named = set(FLAG.findall(text))
    return {longs[0] for longs in options(cmd).values() if not named & set(longs)}


def documented(cmd_path: str) -> tuple[set[str], dict[str, tuple[str, ...]]]:
    """(options missing from the command's pages, all its options)."""
    return missing_from(page_text(PAGES[cmd_path]), COMMANDS[cmd_path]), options(COMMANDS[cmd_path])


def test_every_command_has_a_page():
    assert set(COMMANDS) <= set(PAGES), f"commands without a docs page in PAGES: {sorted(set(COMMANDS) - set(PAGES))}"
    for names in PAGES.values():
        for n in names:
            assert (DOCS / n).is_file(), n


@pytest.mark.parametrize("cmd_path", sorted(PAGES))
def test_pages_name_every_option(cmd_path):
    if cmd_path not in COMMANDS:
        pytest.skip(f"temacli {cmd_path} is not in this build")
    missing, _ = documented(cmd_path)
    known = UNDOCUMENTED.get(cmd_path, set())
    new = missing - known
    assert not new, f"{', '.join(PAGES[cmd_path])}: options of `temacli {cmd_path}` not named on the page: {sorted(new)}"
    fixed = known - missing
    assert not fixed, f"documented now, remove from UNDOCUMENTED[{cmd_path!r}]: {sorted(fixed)}"


# ----------------------------------------------------------------------------- flags used in the docs
def _invocations(text: str):
    """(command path, flags) of every `temacli ...` command line in a Markdown text."""
    paths = sorted(COMMANDS, key=lambda p: -len(p.split()))
    # join continuation lines, then look at code blocks' lines and inline code spans
    text = re.sub(r"\\\n\s*", " ", text)
    chunks = []
    in_block = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            chunks.append(line)
        else:
            chunks += re.findall(r"`([^`]*temacli [^`]*)`", line)
    for chunk in chunks:
        for m in re.finditer(r"(?<![\w/.-])temacli ((?:[a-z][\w-]* ?)+)(.*)", chunk):
            words = m.group(1).split()
            rest = m.group(1) + m.group(2)
            path = next((p for p in paths if words[: len(p.split())] == p.split()), None)
            if path is None:
                continue
            args = re.split(r"\s(?:\||;|&&|>|2>|#)\s|\s#", rest, maxsplit=1)[0]
            # a second temacli on the line starts another invocation
            args = args.split(" temacli ", 1)[0]
            yield path, sorted({f.split("=")[0] for f in FLAG.findall(args)})


DOC_FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), ROOT / "examples" / "recipes" / "README.md"]


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_flags_used_in_the_docs_exist(doc):
    bad = []
    for path, flags in _invocations(doc.read_text()):
        cmd = COMMANDS[path]
        visible = {o for longs in options(cmd).values() for o in longs} | {"--help"}
        hidden = {o for longs in options(cmd, hidden=True).values() for o in longs}
        for f in flags:
            if f in hidden:
                bad.append(f"temacli {path} {f} (a deprecated spelling)")
            elif f not in visible:
                bad.append(f"temacli {path} {f}")
    assert not bad, f"{doc.name}: options that do not exist: {sorted(set(bad))}"


def test_the_checks_can_fail():
    """The two checks see real mismatches: a made-up flag, and an option left off a page."""
    fake = "```\ntemacli train --data d --no-such-flag 3 --out m\n```\n`temacli plot a --out b --dpy 3`"
    found = dict(_invocations(fake))
    assert "--no-such-flag" in found["train"] and "--dpy" in found["plot"]
    assert "--data" in found["train"] and "--out" in found["train"]
    opts = options(COMMANDS["plot"])
    assert {"--out", "--dpi", "--force", "--curves"} <= {o for v in opts.values() for o in v}
    page = page_text(PAGES["plot"])
    assert missing_from(page, COMMANDS["plot"]) == set()
    assert missing_from(page.replace("--dpi", "--dots"), COMMANDS["plot"]) == {"--dpi"}
    # --curves/--no-curves is one option: either spelling documents it
    assert missing_from(page.replace("--curves", "--c"), COMMANDS["plot"]) == set()
    assert missing_from(page.replace("--curves", "--c").replace("--no-curves", "--n"), COMMANDS["plot"]) == {"--curves"}


def test_root_options_are_documented():
    root = {o for longs in options(ROOT_CMD).values() for o in longs}
    assert {"--version", "--install-completion", "--show-completion"} <= root
    text = (DOCS / "install.md").read_text()
    for o in ("--install-completion", "--show-completion"):
        assert o in text
