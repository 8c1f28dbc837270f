"""escbridge's version is written once, in src/escbridge/__init__.py; this stamps the copies.

The four distributions shipped beside the core (the three connectors and the webhook receiver)
each build from their own folder, and setuptools cannot read a file outside it, so each carries
a copy: its own ``version``, its ``escbridge>=`` pins, and, for a connector, the ``__version__``
its ConnectorInfo reports. They are released together and must not disagree.

    python scripts/version.py            stamp the copies from src/escbridge/__init__.py
    python scripts/version.py 0.3.0      write a new version there, then stamp
    python scripts/version.py --check    change nothing; exit 1 naming each copy that differs

`make dist` runs --check, and tests/core/test_version.py fails the suite the same way. The example
plugin examples/acmedesk is a third party's distribution with its own version: not stamped.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("src/escbridge/__init__.py")
VERSION_LINE = re.compile(r'^(__version__ = ")([^"]+)(")', re.MULTILINE)
PROJECT_VERSION = re.compile(r'^(version = ")([^"]+)(")', re.MULTILINE)
# "escbridge>=0.2.0" and "escbridge[sandbox]>=0.2.0" in dependencies and extras
PIN = re.compile(r'("escbridge(?:\[[a-z,]+\])?>=)([^",;]+)(")')
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class Copy:
    """One place that repeats the version: a file and the pattern whose middle group is it."""

    path: Path
    pattern: re.Pattern[str]
    what: str


SHIPPED = ("connectors/zendesk", "connectors/freshdesk", "connectors/zohodesk", "webhooks")
COPIES: tuple[Copy, ...] = (
    *(Copy(Path(d) / "pyproject.toml", PROJECT_VERSION, "version") for d in SHIPPED),
    *(Copy(Path(d) / "pyproject.toml", PIN, "escbridge>= pin") for d in SHIPPED),
    *(
        Copy(Path(f"connectors/{n}/src/escbridge_{n}/connector.py"), VERSION_LINE, "__version__")
        for n in ("zendesk", "freshdesk", "zohodesk")
    ),
)


def read_version(root: Path = ROOT) -> str:
    """The version, from the one line that defines it."""
    match = VERSION_LINE.search((root / SOURCE).read_text(encoding="utf-8"))
    if match is None:
        raise SystemExit(f'{SOURCE}: no line `__version__ = "X.Y.Z"`')
    return match.group(2)


def disagreements(root: Path = ROOT) -> list[str]:
    """Each copy that differs from the source, as ``path:line: what is X, expected Y``."""
    version = read_version(root)
    found: list[str] = []
    for copy in COPIES:
        text = (root / copy.path).read_text(encoding="utf-8")
        matches = list(copy.pattern.finditer(text))
        if not matches:
            found.append(f"{copy.path}: no {copy.what} found")
        for match in matches:
            if match.group(2) != version:
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{copy.path}:{line}: {copy.what} is {match.group(2)}, not {version}")
    return found


def stamp(root: Path = ROOT) -> list[Path]:
    """Write the source's version into every copy; the files changed."""
    version = read_version(root)
    changed: list[Path] = []
    for path in dict.fromkeys(c.path for c in COPIES):
        text = (root / path).read_text(encoding="utf-8")
        new = text
        for copy in (c for c in COPIES if c.path == path):
            new = copy.pattern.sub(lambda m: f"{m.group(1)}{version}{m.group(3)}", new)
        if new != text:
            (root / path).write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def set_version(version: str, root: Path = ROOT) -> None:
    """Write a new version into the source line."""
    path = root / SOURCE
    text = path.read_text(encoding="utf-8")
    path.write_text(VERSION_LINE.sub(lambda m: f"{m.group(1)}{version}{m.group(3)}", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("version", nargs="?", help="a new version X.Y.Z to write, then stamp")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any differ")
    args = parser.parse_args(argv)
    if args.check:
        problems = disagreements()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(
                "fix: python scripts/version.py (stamps them from src/escbridge/__init__.py)",
                file=sys.stderr,
            )
            return 1
        print(f"escbridge {read_version()}: every copy agrees")
        return 0
    if args.version is not None:
        if not SEMVER.match(args.version):
            parser.error(f"{args.version!r} is not X.Y.Z")
        set_version(args.version)
    changed = stamp()
    for path in changed:
        print(f"stamped {path}")
    print(f"escbridge {read_version()}: every copy agrees")
    return 0


if __name__ == "__main__":
    sys.exit(main())
