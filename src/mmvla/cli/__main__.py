"""``python -m mmvla.cli`` (and ``torchrun ... -m mmvla.cli train ...``)."""

import sys

from mmvla.cli.main import main

sys.exit(main())
