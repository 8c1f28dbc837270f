"""`escbridge connectors` and `escbridge check`: what is installed, and is each account ready.

Exit codes: 0 all good, 1 something is not ready (the command ran and found it), 2 invalid
input. Secrets are never printed: check reports carry names, ids and messages already
stripped of them by the connectors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM
from escbridge.config import DEFAULT_CONFIG_FILE, Config, load_config
from escbridge.connector import CheckReport, Connector, Registry, default_registry
from escbridge.errors import ConfigError, EscbridgeError, InvalidInputError
from escbridge.matrix import load_matrix

__all__ = [
    "configure_check_parser",
    "configure_connectors_parser",
    "run_check",
    "run_connectors",
]


def configure_connectors_parser(p: argparse.ArgumentParser) -> None:
    p.description = "List the connector plugins installed, their versions and capabilities."


def configure_check_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "For each helpdesk instance in the config: load its plugin, validate its settings, "
        "prove the credentials and reachability, and resolve every group the matrix routes to."
    )
    p.add_argument(
        "--config", "-c", default=DEFAULT_CONFIG_FILE, help="escbridge.yaml (default: %(default)s)"
    )
    p.add_argument(
        "--instance", action="append", default=[], help="check only this instance (repeatable)"
    )


def run_connectors(
    args: argparse.Namespace, *, registry: Registry | None = None, out: TextIO | None = None
) -> int:
    """Print every installed plugin; a broken one is listed with its error (exit 1)."""
    out = out or sys.stdout
    statuses = (registry or default_registry()).statuses()
    if not statuses:
        print(
            "No connector plugins installed. Install one, e.g.: pip install escbridge-zendesk",
            file=out,
        )
        return EXIT_PROBLEM
    broken = 0
    for st in statuses:
        if st.plugin is None:
            broken += 1
            print(f"{st.name}  BROKEN  ({st.distribution or st.target})", file=out)
            print(f"    error: {st.error}", file=out)
            continue
        info = st.plugin.info
        print(
            f"{st.name}  {info.display_name} {info.version}  ({st.distribution or st.target})",
            file=out,
        )
        caps = ", ".join(sorted(info.capabilities)) or "none declared"
        print(f"    capabilities: {caps}", file=out)
        if info.signature_scheme:
            print(f"    webhook signature: {info.signature_scheme}", file=out)
    return EXIT_PROBLEM if broken else EXIT_OK


def _matrix_groups(config: Config, instance: str) -> tuple[list[str], str | None]:
    """The group names the matrix routes to on one instance, and a problem if it can't be read."""
    try:
        matrix = load_matrix(config.matrix_path)
    except InvalidInputError as exc:
        return [], "matrix is invalid:\n" + "\n".join(f"      {p}" for p in exc.problems)
    helpdesk = config.instances[instance].type
    groups = [g for r in matrix.rungs if (g := r.group_for(instance, helpdesk)) is not None]
    return sorted(set(groups)), None


def run_check(
    args: argparse.Namespace,
    *,
    registry: Registry | None = None,
    out: TextIO | None = None,
    overrides: Mapping[str, object] | None = None,
) -> int:
    """Check every configured instance (or those given with --instance); say what is wrong."""
    out = out or sys.stdout
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config} is invalid:", file=out)
        for problem in exc.problems:
            print(f"  {problem}", file=out)
        return EXIT_INVALID
    wanted: Sequence[str] = args.instance or list(config.instances)
    unknown = [n for n in wanted if n not in config.instances]
    if unknown:
        print(
            f"unknown instance(s): {', '.join(unknown)} "
            f"(configured: {', '.join(config.instances) or 'none'})",
            file=out,
        )
        return EXIT_INVALID
    if not wanted:
        print(f"{config.path}: no instances configured under 'instances:'", file=out)
        return EXIT_PROBLEM

    reg = registry or default_registry()
    plugins, failures = reg.load_many(config.instances[n].type for n in wanted)
    not_ready = 0
    for name in wanted:
        inst = config.instances[name]
        print(f"{name} ({inst.type})", file=out)
        if inst.type in failures:
            print(f"  NOT READY: {failures[inst.type]}", file=out)
            not_ready += 1
            continue
        try:
            connector: Connector = plugins[inst.type].create(inst, **dict(overrides or {}))
        except ConfigError as exc:
            print("  NOT READY: invalid settings", file=out)
            for problem in exc.problems:
                print(f"    {problem}", file=out)
            not_ready += 1
            continue
        groups, matrix_problem = _matrix_groups(config, name)
        try:
            report = connector.check(groups)
        except EscbridgeError as exc:
            report = CheckReport(ok=False, problems=(str(exc),))
        if matrix_problem:
            report = CheckReport(
                ok=False,
                identity=report.identity,
                missing_groups=report.missing_groups,
                problems=(*report.problems, matrix_problem),
                notes=report.notes,
            )
        _print_report(report, groups, out)
        not_ready += not report.ok
    return EXIT_PROBLEM if not_ready else EXIT_OK


def _print_report(report: CheckReport, groups: Sequence[str], out: TextIO) -> None:
    if report.identity:
        print(f"  connected as {report.identity}", file=out)
    for problem in report.problems:
        print(f"  problem: {problem}", file=out)
    if report.missing_groups:
        print(
            "  groups the matrix routes to that do not exist: " + ", ".join(report.missing_groups),
            file=out,
        )
    found = [g for g in groups if g not in report.missing_groups]
    if found and report.identity:
        print(f"  groups resolved: {', '.join(found)}", file=out)
    for note in report.notes:
        print(f"  note: {note}", file=out)
    print("  READY" if report.ok else "  NOT READY", file=out)
