"""`escbridge connectors` and `escbridge check`: what is installed, and is each account ready.

Exit codes: 0 all good, 1 something is not ready (the command ran and found it), 2 invalid
input. Secrets are never printed: check reports carry names, ids and messages already
stripped of them by the connectors.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from escbridge.cli._common import EXIT_INVALID, EXIT_OK, EXIT_PROBLEM, invalid
from escbridge.config import (
    DEFAULT_CONFIG_FILE,
    Config,
    group_key_problems,
    load_config,
    routing,
)
from escbridge.connector import CheckReport, Connector, Registry, default_registry
from escbridge.errors import (
    ConfigError,
    EscbridgeError,
    InvalidInputError,
    PluginLoadError,
    Problem,
)
from escbridge.matrix import Matrix, load_matrix
from escbridge.wording import pip_install, plural

__all__ = [
    "config_problems",
    "configure_check_parser",
    "configure_connectors_parser",
    "run_check",
    "run_connectors",
    "validate_config",
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
            "No connector plugins installed. Install one, e.g.: "
            + pip_install("escbridge-zendesk"),
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


def _load_matrix(config: Config) -> tuple[Matrix | None, str | None]:
    """The matrix the config names, or why it cannot be read (each instance is then not ready)."""
    try:
        return load_matrix(config.matrix_path), None
    except InvalidInputError as exc:
        return None, "matrix is invalid:\n" + "\n".join(f"      {p}" for p in exc.problems)


def _matrix_groups(matrix: Matrix | None, instance: str, helpdesk: str) -> list[str]:
    """The group names the matrix routes to on one instance."""
    if matrix is None:
        return []
    groups = [g for r in matrix.rungs if (g := r.group_for(instance, helpdesk)) is not None]
    return sorted(set(groups))


def config_problems(
    config: Config, matrix: Matrix | None, installed: Collection[str]
) -> list[Problem]:
    """What makes the config invalid beyond its own file: an instance ``type:`` no installed
    connector provides, a matrix ``groups:`` key that is neither an instance nor a helpdesk.
    `check` and `validate` both refuse these (exit 2) before anything else."""
    problems = config.helpdesk_problems(installed)
    if matrix is not None:
        problems.extend(group_key_problems(matrix, installed, config.instances))
    return problems


def run_check(
    args: argparse.Namespace,
    *,
    registry: Registry | None = None,
    out: TextIO | None = None,
    overrides: Mapping[str, object] | None = None,
) -> int:
    """Check every configured instance (or those given with --instance); say what is wrong.

    The config is validated first as `validate` does (every section, instance types, the
    matrix's group keys: exit 2); then, per instance, its settings, credentials, groups and
    whether the matrix routes anything there at all (exit 1 when not).
    """
    out = out or sys.stdout
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _invalid(args.config, exc.problems, out)
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
    matrix, matrix_problem = _load_matrix(config)
    problems = config_problems(config, matrix, reg.names())
    if problems:
        return _invalid(args.config, problems, out)
    plugins, failures = reg.load_many(config.instances[n].type for n in wanted)
    not_ready = 0
    started = datetime.now(UTC)
    checked: dict[str, CheckReport] = {}  # kept for `escbridge status`
    for name in wanted:
        inst = config.instances[name]
        print(f"{name} ({inst.type})", file=out)
        if inst.type in failures:
            print(f"  NOT READY: {failures[inst.type]}", file=out)
            checked[name] = CheckReport(ok=False, problems=(str(failures[inst.type]),))
            not_ready += 1
            continue
        try:
            connector: Connector = plugins[inst.type].create(inst, **dict(overrides or {}))
        except ConfigError as exc:
            print("  NOT READY: invalid settings", file=out)
            for problem in exc.problems:
                print(f"    {problem}", file=out)
            checked[name] = CheckReport(
                ok=False, problems=("invalid settings", *(str(p) for p in exc.problems))
            )
            not_ready += 1
            continue
        groups = _matrix_groups(matrix, name, inst.type)
        try:
            report = connector.check(groups)
        except EscbridgeError as exc:
            report = CheckReport(ok=False, problems=(str(exc),))
        route = routing(matrix, name, inst.type) if matrix is not None else None
        more = [p for p in (matrix_problem, route.problem() if route else None) if p]
        if more:
            report = CheckReport(
                ok=False,
                identity=report.identity,
                missing_groups=report.missing_groups,
                problems=(*report.problems, *more),
                notes=report.notes,
            )
        warning = route.warning() if route is not None else None
        _print_report(report, groups, out, warnings=[warning] if warning else [])
        checked[name] = report
        not_ready += not report.ok
    # A check needs no store: when there is none yet, nothing is kept and nothing is said.
    from escbridge.cli.status import record_check_reports

    record_check_reports(config.store_url, checked, started, datetime.now(UTC))
    return EXIT_PROBLEM if not_ready else EXIT_OK


def _invalid(path: str, problems: Sequence[Problem], out: TextIO) -> int:
    """One ``error: file:line …`` line a problem, as `validate` prints them (each problem
    names its file, so ``path`` is said only when there is none)."""
    for problem in problems or [Problem(path, None, "", "is invalid")]:
        print(f"error: {problem}", file=out)
    return EXIT_INVALID


def _print_report(
    report: CheckReport, groups: Sequence[str], out: TextIO, *, warnings: Sequence[str] = ()
) -> None:
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
    for warning in warnings:
        print(f"  warning: {warning}", file=out)
    print("  READY" if report.ok else "  NOT READY", file=out)


_UNSET = re.compile(r"environment variable (\w+) is (?:not set|empty)")


def _load_without_secrets(path: Path) -> Config:
    """The config as `validate` reads it: it contacts nothing, so an unset ``${VAR}`` of an
    instance is a warning (the commands that talk to the helpdesk refuse it) and the settings
    are checked with a stand-in value; every other problem is an error as everywhere."""
    try:
        return load_config(path)
    except ConfigError as exc:
        unset = {
            m.group(1): p
            for p in exc.problems
            if p.path.startswith("instances.") and (m := _UNSET.fullmatch(p.message))
        }
        if not unset or len(unset) < len(exc.problems):
            raise
    for var, problem in unset.items():
        where = f"{problem.file}:{problem.line}" if problem.line else problem.file
        print(
            f"warning: {where} {problem.path}: ${{{var}}} is not set here — check, serve, "
            "worker and sync need it",
            file=sys.stderr,
        )
    env = {**os.environ, **{var: f"unset-{var}" for var in unset}}
    return load_config(path, env=env)


def _placeholders(config: Config) -> list[str]:
    """Settings still holding the starter's placeholders (`escbridge init` writes
    ``your-subdomain``): valid in form, so only this says it before `check` cannot connect."""
    found = []
    for name, instance in config.instances.items():
        for key, value in instance.settings.items():
            if isinstance(value, str) and "your-" in value and value not in instance.secret_values:
                doc = instance.source
                where = doc.problem(("instances", name, key), "") if doc is not None else None
                line = f"{where.file}:{where.line} " if where is not None and where.line else ""
                found.append(
                    f"{line}instances.{name}.{key}: {value!r} is the starter's placeholder — "
                    "write your helpdesk's own value"
                )
    return found


def validate_config(path: Path, *, registry: Registry | None = None) -> int:
    """`escbridge validate escbridge.yaml`: the config as every command reads it (each
    section, each instance's settings by its connector's model), the matrix it names, and
    whether the matrix routes anything on each instance. Nothing is contacted.

    Exit 2 for invalid input (every problem, file:line), 1 when an instance would escalate
    nothing or a connector cannot be loaded (or the matrix has a rule that can never fire),
    0 otherwise; warnings (a destination without a group on some instance) keep 0.
    """
    from escbridge.cli.matrix import lint_matrix, unset_secrets

    try:
        config = _load_without_secrets(path)
    except ConfigError as exc:
        return invalid(exc)
    reg = registry or default_registry()
    installed = reg.names()
    problems: list[Problem] = []
    try:
        matrix: Matrix | None = load_matrix(config.matrix_path)
    except InvalidInputError as exc:
        matrix = None
        problems.extend(exc.problems)
    problems.extend(config_problems(config, matrix, installed))
    errors: list[str] = []
    for name, instance in config.instances.items():
        if instance.type not in installed:
            continue  # already a problem
        try:
            reg.load(instance.type).validate(instance)
        except ConfigError as exc:
            problems.extend(exc.problems)
        except PluginLoadError as exc:
            errors.append(f"{name}: {exc}")
    if problems:
        return invalid(ConfigError(problems))
    assert matrix is not None  # it loaded, or its problems were returned above
    errors.extend(_placeholders(config))
    warnings = lint_matrix(matrix)
    for name, instance in config.instances.items():
        route = routing(matrix, name, instance.type)
        if (problem := route.problem()) is not None:
            errors.append(problem)
        elif (warning := route.warning()) is not None:
            print(f"warning: {warning}", file=sys.stderr)
    for warning in [*warnings, *unset_secrets(matrix)]:
        print(f"warning: {warning}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        return EXIT_PROBLEM
    instances = ", ".join(f"{n} ({i.type})" for n, i in config.instances.items()) or "none"
    counts = ", ".join(
        plural(n, word) for n, word in ((len(matrix.levels), "level"), (len(matrix.teams), "team"))
    )
    print(
        f"{path}: ok — {plural(len(config.instances), 'instance')}: {instances}; "
        f"matrix {config.matrix_path}: {counts}, {plural(len(matrix.rules), 'rule')}",
        file=sys.stdout,
    )
    return EXIT_PROBLEM if warnings else EXIT_OK
