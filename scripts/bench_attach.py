"""Attach latency and idle-worker memory only: the ``attach`` scenario of the suite.

    python scripts/bench_attach.py [--quick]

Same as ``python -m scripts.bench --only attach`` (see scripts/bench/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench.__main__ import main

if __name__ == "__main__":
    sys.argv[1:1] = ["--only", "attach"]
    main()
