"""Write the held-out wording set shipped with the package (src/mmvla/sim/tabletop/data/heldout_wordings.tsv).

    .venv/bin/python scripts/make_wordings.py          # rewrite the file
    .venv/bin/python scripts/make_wordings.py --check  # exit 1 if the file differs from the generator

The set is :func:`mmvla.sim.tabletop.wordings.wording_set` over the HELDOUT lexicon (seed 0, 8 wordings per task,
every task of every family and split); tests/sim/test_wordings.py checks the file against it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmvla.core.io import atomic_write_bytes
from mmvla.sim.tabletop.wordings import HELDOUT_FILE, heldout_file_text

TARGET = Path(__file__).resolve().parents[1] / "src" / "mmvla" / "sim" / "tabletop" / "data" / HELDOUT_FILE


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare the file with the generator")
    args = p.parse_args()
    text = heldout_file_text()
    if args.check:
        same = TARGET.is_file() and TARGET.read_text(encoding="utf-8") == text
        print(f"{TARGET}: {'up to date' if same else 'differs from the generator'}")
        return 0 if same else 1
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(TARGET, text.encode("utf-8"))
    print(f"wrote {TARGET} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
