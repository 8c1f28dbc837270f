"""One version: written in src/escbridge/__init__.py, stamped into the four other distributions,
reported by `escbridge --version`, and the top release of CHANGELOG.md."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

import escbridge
from escbridge.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("version_script", ROOT / "scripts" / "version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


version_script = _script()


def test_every_copy_of_the_version_agrees() -> None:
    assert version_script.read_version() == escbridge.__version__
    problems = version_script.disagreements()
    assert not problems, "run python scripts/version.py:\n" + "\n".join(problems)


def test_a_copy_that_differs_is_named_and_stamped(tmp_path: Path) -> None:
    for copy in version_script.COPIES:
        (tmp_path / copy.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / copy.path, tmp_path / copy.path)
    (tmp_path / version_script.SOURCE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / version_script.SOURCE, tmp_path / version_script.SOURCE)
    version_script.set_version("9.8.7", root=tmp_path)

    problems = version_script.disagreements(tmp_path)
    webhooks = "webhooks/pyproject.toml"
    assert any(re.match(rf"{webhooks}:\d+: version is .+, not 9\.8\.7", p) for p in problems)
    assert any(p.startswith(f"{webhooks}:") and "escbridge>= pin" in p for p in problems)
    zendesk = "connectors/zendesk/src/escbridge_zendesk/connector.py"
    assert any(p.startswith(f"{zendesk}:") and "__version__" in p for p in problems)

    changed = version_script.stamp(tmp_path)
    assert {str(p) for p in changed} == {str(c.path) for c in version_script.COPIES}
    assert version_script.disagreements(tmp_path) == []
    text = (tmp_path / webhooks).read_text(encoding="utf-8")
    assert 'version = "9.8.7"' in text and '"escbridge>=9.8.7"' in text


def test_version_names_escbridge_and_each_installed_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"escbridge {escbridge.__version__} (")
    for ep in metadata.entry_points(group="escbridge.connectors"):
        assert ep.dist is not None
        assert f"{ep.name} {ep.dist.version}" in line
    assert f"webhooks {metadata.version('escbridge-webhooks')}" in line


# --- CHANGELOG.md: Keep a Changelog 1.1.0 ---------------------------------------------------

RELEASE = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+)\] - (?P<date>\d{4}-\d{2}-\d{2})$")
SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def changelog_headings() -> list[str]:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.startswith("#")]


def test_the_changelog_top_release_is_the_package_version() -> None:
    headings = changelog_headings()
    assert headings[0] == "# Changelog"
    assert headings[1] == "## [Unreleased]"
    releases = [RELEASE.match(h) for h in headings if h.startswith("## ") and h != headings[1]]
    assert all(releases), [h for h in headings if h.startswith("## ")]
    assert releases[0] is not None and releases[0]["version"] == escbridge.__version__


def test_the_changelog_parses_as_keep_a_changelog() -> None:
    """Releases newest first, each with only the format's sections, none empty or repeated."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    dates = []
    for release in releases:
        heading, _, body = release.partition("\n")
        match = RELEASE.match(f"## {heading}")
        if match is not None:
            dates.append(match["date"])
        sections = re.findall(r"^### (.+)$", body, flags=re.MULTILINE)
        assert set(sections) <= SECTIONS, heading
        assert len(sections) == len(set(sections)), heading
        for section in re.split(r"^### .+$", body, flags=re.MULTILINE)[1:]:
            assert re.search(r"^- \S", section, flags=re.MULTILINE), f"empty section in {heading}"
    assert dates == sorted(dates, reverse=True)
