"""The guide in docs/ (and the README): snippets run, commands parse, numbers match the result files.

- Every fenced ``python`` block in docs/ runs (in a fresh namespace, in a temporary directory). A block
  preceded by ``<!-- test: slow -->`` is marked slow; ``<!-- test: skip -->`` is shown but not run (the
  design source's flawed sketches).
- Every ``mmvla ...`` command in a fenced shell block parses with the real argparse parser (parse only,
  nothing runs); every ``mmvla SUB ...`` in inline code names a real subcommand and real options.
- ``python benchmarks/X.py`` and ``scripts/X`` mentioned in commands exist.
- Every ``<!-- num:... -->`` / ``<!-- table:... -->`` marker holds what scripts/docs_numbers.py computes
  from benchmarks/results/*.json, and docs/reference/cli.md is the parser's current help.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from script_modules import load_script

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
SOURCES = [*PAGES, ROOT / "README.md"]


def _script(name: str) -> ModuleType:
    return load_script(f"scripts/{name}.py", f"mmvla_docs_{name}")


docs_numbers = _script("docs_numbers")
docs_cli = _script("docs_cli")


# ---------------------------------------------------------------------------------------------------
# Fenced blocks
# ---------------------------------------------------------------------------------------------------

FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M
)
TAG = re.compile(r"<!-- test: (?P<tag>slow|skip)\b[^>]*-->\s*$")  # e.g. <!-- test: skip (needs a server) -->


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    code: str
    tag: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(paths: list[Path]) -> Iterator[Block]:
    for path in paths:
        text = path.read_text()
        for m in FENCE.finditer(text):
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            tag = TAG.search(before)
            indent = len(m.group("indent"))
            code = "\n".join(line[indent:] for line in m.group("body").splitlines())
            line = text.count("\n", 0, m.start()) + 1
            yield Block(path, line, m.group("lang").lower(), code, tag.group("tag") if tag else None)


def _python_params() -> list[object]:
    params: list[object] = []
    for b in blocks(PAGES):
        if b.lang not in ("python", "py") or b.tag == "skip":
            continue
        marks = [pytest.mark.slow] if b.tag == "slow" else []
        params.append(pytest.param(b, id=b.id, marks=marks))
    return params


PYTHON_BLOCKS = _python_params()


def test_the_guide_has_runnable_snippets() -> None:
    assert len(PYTHON_BLOCKS) >= 10


@pytest.mark.parametrize("block", PYTHON_BLOCKS)
def test_python_snippet_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    try:
        code = compile(block.code, block.id, "exec")
        exec(code, {"__name__": "__main__"})
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("block", PYTHON_BLOCKS)
def test_python_snippet_asserts_what_it_prints(block: Block) -> None:
    """A snippet that prints a result also asserts it, so a wrong result fails instead of printing."""
    if "print(" not in block.code:
        return
    assert re.search(r"^\s*assert\b", block.code, re.M), f"{block.id} prints but asserts nothing"


# ---------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------

SHELL_LANGS = ("bash", "sh", "shell", "console", "")
SEPARATORS = ("&&", "||", ";", "|")


def shell_commands(code: str) -> Iterator[list[str]]:
    """Split a shell block into simple commands (continuations joined, comments and prompts removed)."""
    code = re.sub(r"\\\n", " ", code)
    for raw in code.splitlines():
        line = raw.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = list(lexer)
        except ValueError:
            continue
        cmd: list[str] = []
        for w in [*words, ";"]:
            if w in SEPARATORS or set(w) <= set(";&|"):
                if cmd:
                    yield cmd
                cmd = []
            else:
                cmd.append(w)


def mmvla_argv(cmd: list[str]) -> list[str] | None:
    """The arguments after ``mmvla`` (or ``python -m mmvla.cli``, ``torchrun ... -m mmvla.cli``), else None."""
    words = [w for w in cmd if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", w)]  # VAR=value prefixes
    for i, w in enumerate(words):
        if w == "mmvla" or w.endswith("/mmvla"):
            return words[i + 1 :] if i == 0 else None
        if w == "mmvla.cli" and i > 0 and words[i - 1] == "-m":
            return words[i + 1 :]
    return None


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    from mmvla.cli import build_parser

    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return docs_cli.subparsers(parser)


def _collect_commands() -> list[object]:
    out: list[object] = []
    for b in blocks(SOURCES):
        if b.lang not in SHELL_LANGS:
            continue
        for cmd in shell_commands(b.code):
            out.append(pytest.param(cmd, id=f"{b.id}:{' '.join(cmd)[:60]}"))
    return out


SHELL = _collect_commands()


def test_docs_show_mmvla_commands() -> None:
    assert sum(1 for p in SHELL if mmvla_argv(p.values[0]) is not None) >= 8  # type: ignore[attr-defined]


@pytest.mark.parametrize("cmd", SHELL)
def test_shell_command_is_valid(cmd: list[str], parser: argparse.ArgumentParser) -> None:
    argv = mmvla_argv(cmd)
    if argv is not None:
        if "-h" in argv or "--help" in argv:
            argv = [a for a in argv if a not in ("-h", "--help")]
            if not argv:
                return
            assert argv[0] in _subparsers(parser), f"unknown subcommand in {cmd}"
            return
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"`mmvla {' '.join(argv)}` does not parse (exit {e.code})")
        assert getattr(args, "_run", None) is not None, f"`mmvla {' '.join(argv)}` names no subcommand"
        return
    # Other commands the guide gives to regenerate a result: the files they run must exist.
    for w in cmd:
        if re.fullmatch(r"(benchmarks|scripts)/[\w./-]+\.(py|sh)", w):
            assert (ROOT / w).is_file(), f"{w} (in `{' '.join(cmd)}`) does not exist"


INLINE = re.compile(r"(?<!`)`(mmvla [^`\n]+)`(?!`)")


def _inline_commands() -> list[object]:
    out: list[object] = []
    for path in SOURCES:
        text = FENCE.sub("", path.read_text())
        for m in INLINE.finditer(text):
            out.append(pytest.param(m.group(1), id=f"{path.relative_to(ROOT)}:{m.group(1)[:50]}"))
    return out


INLINE_COMMANDS = _inline_commands()


@pytest.mark.parametrize("text", INLINE_COMMANDS)
def test_inline_command_names_real_options(text: str, parser: argparse.ArgumentParser) -> None:
    """Inline `mmvla SUB ...` is a mention or a synopsis (`[--resume]`): the subcommand and every --flag exist.
    (Full invocations are in fenced shell blocks, which must parse.)"""
    words = text.split()
    subs = _subparsers(parser)
    if len(words) < 2 or words[1].startswith("-"):
        return
    assert words[1] in subs, f"`{text}`: no subcommand {words[1]!r}"
    known = {s for a in subs[words[1]]._actions for s in a.option_strings}
    for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", text):
        assert flag in known, f"`{text}`: `mmvla {words[1]}` has no option {flag}"


# ---------------------------------------------------------------------------------------------------
# Generated content
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_numbers_match_result_files(path: Path) -> None:
    _, problems = docs_numbers.process(path.read_text(), path)
    assert not problems, "run `.venv/bin/python scripts/docs_numbers.py --write`:\n" + "\n".join(
        map(str, problems)
    )


# Markers per page when this test was last updated: a page may gain markers, never silently lose one
# (a number typed over its marker would otherwise pass every other check). Raise a count when you add
# markers; lower it only together with the text that no longer states the number.
MARKERS = {
    "README.md": 37,
    "docs/findings.md": 182,
    "docs/guide/fusion-comparison.md": 94,
    "docs/guide/06-vla-policy.md": 22,
    "docs/guide/04-contrastive-learning.md": 14,
    "docs/guide/10-next-steps-and-cautions.md": 9,
    "docs/guide/01-single-vs-multimodal.md": 9,
    "docs/guide/03-cross-modal-attention.md": 7,
    "docs/guide/08-alignment-and-modality-gap.md": 4,
    "docs/guide/07-context-and-hierarchical-fusion.md": 4,
}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_carry_numbers(path: Path) -> None:
    name = str(path.relative_to(ROOT))
    count = len(list(docs_numbers.markers(path.read_text())))
    assert count >= MARKERS.get(name, 0), f"{name}: {count} markers, at least {MARKERS[name]} expected"


def test_marker_table_names_real_pages() -> None:
    assert set(MARKERS) <= {str(p.relative_to(ROOT)) for p in SOURCES}


# Pages whose measured numbers all come from markers: a percentage, a duration or a p-value typed in
# their prose is either stale already or will be after the next benchmark run. A historical figure from
# a result file that no longer exists stays only on a line that says where it was measured.
MARKED_ONLY = ["docs/findings.md", "docs/guide/fusion-comparison.md"]
HISTORICAL = re.compile(r"measured at commit [0-9a-f]{7,40}\b")
_THRESHOLD = r"(?<![≤≥<>] )(?<![≤≥<>])"  # "target ≥ 80%", "≤ 60 minutes" are goals, not measurements
PROSE_NUMBER = re.compile(
    _THRESHOLD + r"(?<![\w.,])\d[\d,]*(?:\.\d+)?%(?! (?:Wilson |confidence )?(?:intervals?|CI)\b)"  # 95% CI
    r"|" + _THRESHOLD + r"(?<![\w.,])\d[\d,]*(?:\.\d+)? ?(?:min|minutes|s|seconds|ms|h|hours)\b"
    r"|\bp ?[=≈<] ?\d*\.?\d+(?:e-?\d+)?"
)


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with every match of ``pattern`` replaced by its newlines only (line numbers are kept)."""
    return pattern.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def prose_numbers(text: str) -> list[tuple[int, str]]:
    """(line number, token) of every measured number typed in prose: outside fenced code, inline code,
    markers (and the tables they produce), HTML comments, image alt text and historical lines."""
    for pattern in (FENCE, docs_numbers.MARKER, re.compile(r"<!--.*?-->", re.S)):
        text = _blank(text, pattern)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"!\[[^\]\n]*\]\([^)\n]*\)", "", text)
    return [
        (i, m.group(0))
        for i, line in enumerate(text.splitlines(), 1)
        if not HISTORICAL.search(line)
        for m in PROSE_NUMBER.finditer(line)
    ]


def test_prose_number_scanner() -> None:
    flagged = [
        "success moved from 15% to 17%",
        "in 20 minutes of training",
        "1,176 s of training",
        "at a 7.1 ms step",
        "23 episodes against 5, p = 0.001",
        "hierarchical or transformer (p ≈ 0.1)",
    ]
    kept = [
        "with 95% Wilson intervals",
        "95% intervals and 95% CI",
        "Target ≥ 80% in ≤ 60 minutes of CPU training",
        "2,000 scenes, 4,000 steps, 16 cores, 8×8 grid tokens, 64² images, 1,067 samples/s",
        "`mmvla collect --seed 50000 --train-minutes 25`",
        "![Success per design: 95% Wilson intervals, 40%](x.png)",
        "<!-- num:x.json:a .0% -->48%<!-- /num --> and p = <!-- num:x.json:p .2f -->0.09<!-- /num -->",
        "old recipe: 16% -> 17% (measured at commit c1a2ae7)",
        "```bash\nmmvla compare --steps 1000  # 20 minutes, 50%\n```",
    ]
    for text in flagged:
        assert prose_numbers(text), text
    for text in kept:
        assert not prose_numbers(text), (text, prose_numbers(text))
    assert prose_numbers("ok\n\n```\n40%\n```\nnow 12% here") == [(6, "12%")]


@pytest.mark.parametrize("name", MARKED_ONLY)
def test_pages_state_no_measured_number_in_prose(name: str) -> None:
    found = prose_numbers((ROOT / name).read_text())
    assert not found, (
        f"{name} types measured numbers in prose (make them markers, reword without them, or cite "
        "'(measured at commit SHA)'): " + ", ".join(f"line {i}: {tok!r}" for i, tok in found)
    )


def test_cli_reference_is_current() -> None:
    assert docs_cli.render() == docs_cli.PAGE.read_text(), (
        "run `.venv/bin/python scripts/docs_cli.py --write`"
    )


TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_tests_exist(path: Path) -> None:
    """Every `tests/x.py::test_name` a page names (the guards of the sketches page) is a real test."""
    for file, name in TEST_REF.findall(path.read_text()):
        assert (ROOT / file).is_file(), f"{file} does not exist"
        assert re.search(rf"^\s*def {name}\(", (ROOT / file).read_text(), re.M), (
            f"{file}::{name} does not exist"
        )


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [str(p.relative_to(DOCS)) for p in PAGES if str(p.relative_to(DOCS)) not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


# ---------------------------------------------------------------------------------------------------
# The marker scheme itself, on a private results directory
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def results(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    data = {
        "latency": {"p50": 2.6831, "ok": True},
        "rows": [
            {"mode": "forward", "batch": 1, "speedup": 2.02},
            {"mode": "backward", "batch": 1, "speedup": 1.28},
            {"mode": "forward", "batch": 8, "speedup": 2.40},
        ],
        "by_name": {"a": {"rate": 0.5}, "b": {"rate": 0.25}},
    }
    (d / "x.json").write_text(json.dumps(data))
    docs_numbers._cache.clear()
    return d


def _fill(text: str, results: Path) -> tuple[str, list[str]]:
    new, problems = docs_numbers.process(text, results / "page.md", results)
    return new, [p.message for p in problems]


def test_marker_values_filters_reducers_and_formats(results: Path) -> None:
    cases = {
        "x.json:latency.p50 .2f": "2.68",
        "x.json:latency.p50": "2.68",
        "x.json:latency.ok": "yes",
        "x.json:latency.p50 *1000 ,.0f": "2,683",
        "x.json:rows.1.speedup .1f": "1.3",
        "x.json:rows[mode=forward,batch=8].speedup .2f": "2.40",
        "x.json:rows[mode=forward].speedup min .1f": "2.0",
        "x.json:rows[mode=forward].speedup max .1f": "2.4",
        "x.json:rows[*].batch len": "3",
        "x.json:by_name.b.rate .0%": "25%",
        "x.json:by_name[*].rate min .0%": "25%",  # [*] of a dict: its values
        "x.json:by_name[*].rate max .0%": "50%",
    }
    for spec, want in cases.items():
        new, problems = _fill(f"<!-- num:{spec} -->?<!-- /num -->", results)
        assert new == f"<!-- num:{spec} -->{want}<!-- /num -->", spec
        assert problems == [f"page says '?', results give '{want}'"], spec
        assert _fill(new, results)[1] == [], spec  # filled text is stable


def test_marker_errors_are_precise(results: Path) -> None:
    errors = {
        "missing.json:a": "missing.json does not exist",
        "x.json:latency.p99": "no key 'p99'",
        "x.json:rows[mode=sideways].speedup": "no element matches [mode=sideways]",
        "x.json:rows[mode=forward].speedup": "yields 2 values; add a reducer",
        "x.json:rows.7": "index 7 out of range",
        "x.json:by_name": "selects a dict",
        "x.json:by_name[a=1].rate": "filter [a=1] needs a list",
    }
    for spec, want in errors.items():
        text = f"<!-- num:{spec} -->kept<!-- /num -->"
        new, problems = _fill(text, results)
        assert new == text, spec  # an unfillable marker is left alone
        assert len(problems) == 1 and want in problems[0], (spec, problems)


def test_missing_file_names_the_benchmark_that_writes_it() -> None:
    docs_numbers._cache.clear()
    _, problems = docs_numbers.process("<!-- num:compare_never.json:a --><!-- /num -->", ROOT / "x.md")
    assert "benchmarks/results/compare_never.json does not exist" in problems[0].message
    assert docs_numbers.producer("compare.json") == "python benchmarks/compare.py"


def test_table_marker(results: Path) -> None:
    spec = "x.json:rows; @index = #; mode = pass; batch = batch; speedup .2f = speed-up"
    new, _ = _fill(f"<!-- table:{spec} -->\n<!-- /table -->", results)
    assert new == (
        f"<!-- table:{spec} -->\n\n"
        "| # | pass | batch | speed-up |\n|---|---|---|---|\n"
        "| 0 | forward | 1 | 2.02 |\n| 1 | backward | 1 | 1.28 |\n| 2 | forward | 8 | 2.40 |\n\n"
        "<!-- /table -->"
    )
    spec = "x.json:by_name; @key = name; rate .0% = rate"
    new, _ = _fill(f"<!-- table:{spec} --><!-- /table -->", results)
    assert "| a | 50% |\n| b | 25% |" in new


def test_check_and_write_cli(results: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("p50 <!-- num:x.json:latency.p50 .1f -->9.9<!-- /num --> ms\n")
    where = ["--results", str(results), str(page)]
    assert docs_numbers.main(["--check", *where]) == 1
    assert docs_numbers.main(["--write", *where]) == 0
    assert page.read_text() == "p50 <!-- num:x.json:latency.p50 .1f -->2.7<!-- /num --> ms\n"
    assert docs_numbers.main(["--check", *where]) == 0


def test_shell_command_splitting() -> None:
    code = "# comment\n$ mmvla collect --out d \\\n  --episodes 2 && OMP_NUM_THREADS=1 mmvla train --data d --out r\n"
    cmds = list(shell_commands(code))
    assert cmds == [
        ["mmvla", "collect", "--out", "d", "--episodes", "2"],
        ["OMP_NUM_THREADS=1", "mmvla", "train", "--data", "d", "--out", "r"],
    ]
    assert mmvla_argv(cmds[1]) == ["train", "--data", "d", "--out", "r"]
    assert mmvla_argv(["torchrun", "--standalone", "-m", "mmvla.cli", "train"]) == ["train"]
    assert mmvla_argv(["python", "benchmarks/policy.py"]) is None


if os.environ.get("MMVLA_DOCS_DEBUG"):  # pragma: no cover - print what the parametrisations found
    print(len(PYTHON_BLOCKS), "python blocks;", len(SHELL), "shell commands;", len(INLINE_COMMANDS), "inline")
