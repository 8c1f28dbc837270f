"""gunicorn with a config it cannot use: the config's own line, not a traceback per worker
boot (issue 17: a new user following the README without a token set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MATRIX = Path(__file__).resolve().parents[2] / "examples" / "matrix.yaml"


def test_a_missing_secret_stops_gunicorn_with_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "escbridge.yaml").write_text(
        f"store: sqlite:///{tmp_path / 'escbridge.db'}\nmatrix: {MATRIX}\ninstances:\n"
        "  support:\n    type: zendesk\n    subdomain: acme\n    email: a@acme.example\n"
        "    api_token: ${TOKEN_NOBODY_SET}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "TOKEN_NOBODY_SET"}
    env["ESCBRIDGE_CONFIG"] = str(tmp_path / "escbridge.yaml")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "gunicorn", "-c", "python:escbridge_webhooks.gunicorn_conf"),
            *("--bind", "127.0.0.1:0", "--workers", "1"),
            "escbridge_webhooks.wsgi:app",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # a bound on a hang, not a wait: gunicorn stops on the first boot error
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "instances.support.api_token: environment variable TOKEN_NOBODY_SET is not set" in output
    assert "Traceback" not in output and "Exception in worker process" not in output
