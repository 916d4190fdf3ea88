"""Write the wording sets shipped with the package (src/mmvla/sim/tabletop/data/: held-out and everyday).

    .venv/bin/python scripts/make_wordings.py          # rewrite the file
    .venv/bin/python scripts/make_wordings.py --check  # exit 1 if the file differs from the generator

The held-out set is :func:`mmvla.sim.tabletop.wordings.wording_set` over the HELDOUT lexicon (seed 0, 8 wordings
per task, every task of every family and split); the everyday set is
:func:`mmvla.sim.tabletop.everyday.everyday_file_text`; tests/sim/tabletop/test_wordings.py checks both files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmvla.core.io import atomic_write_bytes
from mmvla.sim.tabletop.everyday import EVERYDAY_FILE, everyday_file_text
from mmvla.sim.tabletop.wordings import HELDOUT_FILE, heldout_file_text

DATA = Path(__file__).resolve().parents[1] / "src" / "mmvla" / "sim" / "tabletop" / "data"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only compare the file with the generator")
    args = p.parse_args()
    status = 0
    for name, text in ((HELDOUT_FILE, heldout_file_text()), (EVERYDAY_FILE, everyday_file_text())):
        target = DATA / name
        if args.check:
            same = target.is_file() and target.read_text(encoding="utf-8") == text
            print(f"{target}: {'up to date' if same else 'differs from the generator'}")
            status |= 0 if same else 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, text.encode("utf-8"))
        print(f"wrote {target} ({text.count(chr(10))} lines)")
    return status


if __name__ == "__main__":
    sys.exit(main())
