"""``python -m docserver``: run the docserver with ``DATABASE_URL`` from the environment.

``docagents docserver`` is the usual entry point (it also knows the embedded
Postgres); this one needs no manager code.
"""

from __future__ import annotations

import os
import sys

from docserver.server import main

if __name__ == "__main__":
    sys.exit(main(database_url=os.environ.get("DATABASE_URL", "")))
