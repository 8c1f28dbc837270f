"""A notification worker process for the kill -9 tests: one delivery pass, then exit.

    python notify_worker.py STORE_URL MATRIX_PATH NOW_ISO CAFILE

The targets' variables come from the environment, as for `escbridge worker`. The test kills
this process while its sink holds the answer: a worker dying mid-send, for real.
"""

from __future__ import annotations

import ssl
import sys
from datetime import datetime
from pathlib import Path

from escbridge.matrix import parse_matrix
from escbridge.notify.deliver import Notifier
from escbridge.store import Store


def main(argv: list[str]) -> int:
    url, matrix_path, now, cafile = argv
    matrix = parse_matrix(Path(matrix_path).read_text(), matrix_path)
    context = ssl.create_default_context(cafile=cafile)
    with Store(url) as store:
        report = Notifier(store, matrix.notify, ssl_context=context).run_once(
            "doomed-worker", datetime.fromisoformat(now)
        )
    print(report.details)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
