"""Build the wheel and sdist of each distribution escbridge ships, into one folder (`make dist`).

Each is built by ``python -m build``: first the sdist, then the wheel from that sdist, so the
wheel published is the one anyone rebuilds from the sdist (a file missing from the sdist would
be missing from the wheel too, and tests/e2e/test_wheels.py would see it). The versions are
checked first (scripts/version.py --check): the five are released together.

    python scripts/dist.py [OUTDIR]      default: dist/ (emptied first)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from version import disagreements  # noqa: E402  (a sibling script, not a package)

# folder, distribution name: examples/acmedesk is a third party's example, not shipped
DISTRIBUTIONS = (
    (".", "escbridge"),
    ("connectors/zendesk", "escbridge-zendesk"),
    ("connectors/freshdesk", "escbridge-freshdesk"),
    ("connectors/zohodesk", "escbridge-zohodesk"),
    ("webhooks", "escbridge-webhooks"),
)


def build_all(outdir: Path) -> list[Path]:
    """Empty ``outdir`` and build all five into it; the files built, sorted."""
    problems = disagreements()
    if problems:
        raise SystemExit(
            "versions disagree — run python scripts/version.py:\n  " + "\n  ".join(problems)
        )
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    with ThreadPoolExecutor(len(DISTRIBUTIONS)) as pool:  # each build is its own process
        done = list(pool.map(lambda d: _build(d[0], outdir), DISTRIBUTIONS))
    failed = [d for d in done if d.returncode != 0]
    for build in failed:  # build's log is long: shown only for a build that failed
        print(f"$ {' '.join(build.args)}\n{build.stdout}", file=sys.stderr)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(DISTRIBUTIONS)} builds failed")
    return sorted(outdir.iterdir())


def _build(folder: str, outdir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "build", "--outdir", str(outdir), str(ROOT / folder)]
    return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the five distributions' wheels and sdists.")
    parser.add_argument("outdir", nargs="?", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    started = time.monotonic()
    built = build_all(args.outdir)
    for path in built:
        print(path)
    print(f"{len(built)} files in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
