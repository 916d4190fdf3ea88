#!/usr/bin/env python3
"""Fill the numbers and tables of the guide (docs/**/*.md, README.md) from benchmarks/results/*.json.

Numbers on the pages are never typed by hand: each sits between two HTML comments (invisible on the
rendered page) that say where it comes from, and this script rewrites what is between them.

One value::

    <!-- num:policy.json:act_latency_ms.p50 .2f -->2.68<!-- /num -->

A whole Markdown table (one row per list element, or per key of a dict)::

    <!-- table:attention.json:results; batch = batch; mode = pass; speedup.ours .2f = speed-up -->
    ...generated table...
    <!-- /table -->

Spec grammar (whitespace separates the parts; no ``|`` anywhere, so a num marker may sit in a table cell):

- ``FILE`` is a file in ``benchmarks/results/``; ``PATH`` is dot-separated: a dict key, a list index,
  or a filter ``[k=v,k2=v2]`` (attached to the key before it, ``results[mode=forward]``) that keeps the
  list elements whose fields equal those values (compared as text); ``[*]`` keeps them all (of a dict:
  its values, ``table.axes[*].mild.retained min``). After a
  filter, the rest of the path applies to every kept element.
- After the path come optional operations, then an optional format spec (Python ``format``, e.g.
  ``.2f``, ``,.0f``, ``.0%``): ``min``, ``max``, ``mean``, ``sum``, ``len`` reduce several values to one
  (a path that yields several values needs one); ``*N`` and ``/N`` scale.
- In a table, ``ROWS`` is the path of the list (or dict) of rows; each column is ``PATH [ops] [spec] =
  Header`` relative to a row; ``@key`` is the row's dict key, ``@index`` its position.

A marker whose file is missing is reported with the benchmark that writes it. ``--check`` exits 1 when a
page differs from its results (or a file or field is missing); ``--write`` rewrites the pages.

    .venv/bin/python scripts/docs_numbers.py --check
    .venv/bin/python scripts/docs_numbers.py --write
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

MARKER = re.compile(
    r"<!-- (?P<kind>num|table):(?P<spec>(?:(?!-->).)*?) -->(?P<body>.*?)<!-- /(?P=kind) -->", re.S
)
_FENCE = re.compile(r"^ *(```|~~~).*?^ *\1[ \t]*$", re.S | re.M)
_SEGMENT = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]|(\.)")
REDUCERS: dict[str, Callable[[list[Any]], Any]] = {
    "min": min,
    "max": max,
    "mean": lambda xs: sum(xs) / len(xs),
    "sum": sum,
    "len": len,
}


class SpecError(ValueError):
    """A marker that cannot be filled: bad spec, missing file or missing field."""


class Many(list):  # type: ignore[type-arg]
    """Several values selected by a filter (as opposed to one value that happens to be a list)."""


def default_sources() -> list[Path]:
    """The pages this script maintains: every Markdown file under docs/ and the README."""
    return [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]


def producer(name: str) -> str:
    """The command that writes ``benchmarks/results/NAME`` (by convention benchmarks/<stem>.py)."""
    script = ROOT / "benchmarks" / f"{Path(name).stem}.py"
    return f"python {script.relative_to(ROOT)}" if script.exists() else "the benchmark that writes it"


_cache: dict[Path, Any] = {}


def load(name: str, results: Path) -> Any:
    """Parsed JSON of ``results/NAME``; a missing file is a SpecError naming the command that writes it."""
    path = results / name
    if path not in _cache:
        if not path.is_file():
            raise SpecError(
                f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} does not exist "
                f"(written by `{producer(name)}`)"
            )
        _cache[path] = json.loads(path.read_text())
    return _cache[path]


def parse_path(path: str) -> list[tuple[str, str]]:
    """``a.b[k=v].0`` -> [("key", "a"), ("key", "b"), ("filter", "k=v"), ("key", "0")]."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise SpecError(f"cannot parse path {path!r} at {path[pos:]!r}")
        if m.group(1) is not None:
            out.append(("key", m.group(1)))
        elif m.group(2) is not None:
            out.append(("filter", m.group(2)))
        pos = m.end()
    if not out:
        raise SpecError("empty path")
    return out


def _step(value: Any, kind: str, arg: str, where: str) -> Any:
    if kind == "key":
        if isinstance(value, dict):
            if arg not in value:
                raise SpecError(f"{where}: no key {arg!r} (keys: {', '.join(map(str, value))})")
            return value[arg]
        if isinstance(value, list) and re.fullmatch(r"-?\d+", arg):
            i = int(arg)
            if not -len(value) <= i < len(value):
                raise SpecError(f"{where}: index {i} out of range ({len(value)} elements)")
            return value[i]
        raise SpecError(f"{where}: cannot take {arg!r} of a {type(value).__name__}")
    if arg.strip() == "*" and isinstance(value, (list, dict)):
        return Many(value.values() if isinstance(value, dict) else value)
    if not isinstance(value, list):
        raise SpecError(f"{where}: filter [{arg}] needs a list, got a {type(value).__name__}")
    conds = []
    for part in arg.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise SpecError(f"{where}: filter term {part!r} is not key=value")
        conds.append((k.strip(), v.strip()))
    kept = Many(
        x for x in value if isinstance(x, dict) and all(k in x and _text(x[k]) == v for k, v in conds)
    )
    if not kept:
        raise SpecError(f"{where}: no element matches [{arg}]")
    return kept


def _text(x: Any) -> str:
    return json.dumps(x) if isinstance(x, bool) or x is None else str(x)


def resolve(data: Any, path: str) -> Any:
    """Follow ``path`` into ``data``; returns a value or a :class:`Many`."""
    value = data
    done = ""
    for kind, arg in parse_path(path):
        where = done or "<root>"
        if isinstance(value, Many):
            value = Many(_step(v, kind, arg, where) for v in value)
        else:
            value = _step(value, kind, arg, where)
        done = (f"{done}.{arg}" if done else arg) if kind == "key" else f"{done}[{arg}]"
    return value


def format_value(value: Any, ops: Sequence[str], spec: str, what: str) -> str:
    """Apply ``ops`` (reducers, ``*N``, ``/N``) then ``format(value, spec)``."""
    for op in ops:
        if op in REDUCERS:
            if not isinstance(value, list):
                raise SpecError(f"{what}: {op} needs several values")
            value = REDUCERS[op](list(value))
        elif op[:1] in "*/":
            try:
                k = float(op[1:])
            except ValueError as e:
                raise SpecError(f"{what}: bad scale {op!r}") from e
            value = (
                Many(_scale(v, op[0], k) for v in value)
                if isinstance(value, Many)
                else _scale(value, op[0], k)
            )
        else:
            raise SpecError(f"{what}: unknown operation {op!r}")
    if isinstance(value, Many):
        if len(value) != 1:
            raise SpecError(f"{what}: yields {len(value)} values; add a reducer ({', '.join(REDUCERS)})")
        value = value[0]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if spec:
        try:
            return format(value, spec)
        except (ValueError, TypeError) as e:
            raise SpecError(f"{what}: cannot format {value!r} with {spec!r}: {e}") from e
    if isinstance(value, float):
        return format(value, ".3g")
    if isinstance(value, (dict, list)):
        raise SpecError(f"{what}: selects a {type(value).__name__}, not a value")
    return str(value)


def _scale(v: Any, op: str, k: float) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise SpecError(f"cannot scale {v!r}")
    return v * k if op == "*" else v / k


def split_value_spec(text: str) -> tuple[str, list[str], str]:
    """``"path min .1f"`` -> ("path", ["min"], ".1f")."""
    parts = text.split()
    if not parts:
        raise SpecError("empty spec")
    path, rest = parts[0], parts[1:]
    spec = ""
    if rest and not (rest[-1] in REDUCERS or rest[-1][:1] in "*/"):
        spec = rest.pop()
    return path, rest, spec


def render_num(spec: str, results: Path) -> str:
    """Text of a ``num`` marker."""
    file, sep, rest = spec.strip().partition(":")
    if not sep:
        raise SpecError(f"num spec {spec!r} must be FILE:PATH [ops] [format]")
    path, ops, fmt = split_value_spec(rest)
    return format_value(resolve(load(file, results), path), ops, fmt, f"{file}:{path}")


def render_table(spec: str, results: Path) -> str:
    """Markdown of a ``table`` marker (with the blank lines Markdown needs around a table)."""
    head, *cols = [c.strip() for c in spec.split(";")]
    file, sep, rows_path = head.partition(":")
    if not sep or not cols:
        raise SpecError(f"table spec {spec!r} must be FILE:ROWS; COLUMN = Header; ...")
    rows = resolve(load(file, results), rows_path)
    items: list[tuple[str, Any]]
    if isinstance(rows, dict):
        items = [(str(k), v) for k, v in rows.items()]
    elif isinstance(rows, list):
        items = [(str(i), v) for i, v in enumerate(rows)]
    else:
        raise SpecError(f"{file}:{rows_path}: rows must be a list or dict, got {type(rows).__name__}")
    columns = []
    for c in cols:
        body, eq, header = c.rpartition(" = ")
        if not eq:
            body, header = c, c.split()[0]
        columns.append((split_value_spec(body), header.strip()))
    lines = [
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for index, (key, row) in enumerate(items):
        cells = []
        for (path, ops, fmt), _ in columns:
            if path == "@key":
                cells.append(key)
            elif path == "@index":
                cells.append(str(index))
            else:
                cells.append(format_value(resolve(row, path), ops, fmt, f"{file}:{rows_path}[{key}].{path}"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n\n" + "\n".join(lines) + "\n\n"


@dataclass
class Problem:
    """One marker whose page text is wrong or that cannot be filled."""

    file: Path
    line: int
    spec: str
    message: str

    def __str__(self) -> str:
        rel = self.file.relative_to(ROOT) if self.file.is_relative_to(ROOT) else self.file
        return f"{rel}:{self.line}: <!-- {self.spec} -->: {self.message}"


def process(text: str, file: Path, results: Path = RESULTS) -> tuple[str, list[Problem]]:
    """Return ``text`` with every marker filled, and the problems (differences and errors) found."""
    problems: list[Problem] = []
    code = [(f.start(), f.end()) for f in _FENCE.finditer(text)]  # examples of markers are left alone

    def fill(m: re.Match[str]) -> str:
        if any(a <= m.start() < b for a, b in code):
            return m.group(0)
        kind, spec, body = m.group("kind"), m.group("spec"), m.group("body")
        line = text.count("\n", 0, m.start()) + 1
        try:
            new = render_num(spec, results) if kind == "num" else render_table(spec, results)
        except SpecError as e:
            problems.append(Problem(file, line, f"{kind}:{spec}", str(e)))
            return m.group(0)
        if new != body:
            shown = new.strip() if kind == "num" else "(table differs)"
            problems.append(
                Problem(file, line, f"{kind}:{spec}", f"page says {body.strip()!r}, results give {shown!r}")
            )
        return f"<!-- {kind}:{spec} -->{new}<!-- /{kind} -->"

    return MARKER.sub(fill, text), problems


def markers(text: str) -> Iterable[re.Match[str]]:
    """Every marker in ``text`` outside fenced code blocks."""
    code = [(f.start(), f.end()) for f in _FENCE.finditer(text)]
    return (m for m in MARKER.finditer(text) if not any(a <= m.start() < b for a, b in code))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a page differs from its results")
    mode.add_argument("--write", action="store_true", help="rewrite the pages from the results")
    p.add_argument("files", nargs="*", type=Path, help="pages (default: docs/**/*.md and README.md)")
    p.add_argument(
        "--results", type=Path, default=RESULTS, help="result directory (default benchmarks/results)"
    )
    args = p.parse_args(argv)
    failed = False
    count = 0
    for file in args.files or default_sources():
        file = file.resolve()
        text = file.read_text()
        count += sum(1 for _ in markers(text))
        new, problems = process(text, file, args.results)
        errors = [q for q in problems if not q.message.startswith("page says")]
        for q in problems if args.check else errors:
            print(q, file=sys.stderr)
        failed |= bool(errors) or (args.check and bool(problems))
        if args.write and new != text:
            file.write_text(new)
            print(f"updated {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
    print(f"{count} markers {'checked' if args.check else 'filled'}{': problems above' if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
