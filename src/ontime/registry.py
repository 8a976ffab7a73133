"""``ontime registry``: the champion's versions and stages as git tags, and the served model.

The champion (``models/champion``) is the DVC artifact ``ontime-delay`` (``artifacts:`` in
``dvc.yaml``). Versions and stages are git tags in GTO's format, which ``dvc artifacts get`` and the
DVC tools read:

- ``ontime-delay@v1.2.0`` registers the commit it points at as version v1.2.0;
- ``ontime-delay#prod#3`` is the 3rd assignment of stage ``prod``: the stage's version is the one
  registered on the commit the newest assignment points at (so a rollback is a new assignment).

Each version's commit holds ``models/package.json``: the pinned model and Bento tags to serve
(content hashes, see ``ontime.serving.package``). The registry is the source of truth; the BentoML
store is a cache of it that ``prune`` trims. ``ontime-delay`` is the name of the registry's artifact
(``ARTIFACT``), whatever the data; the model's name in BentoML's store is params ``serve.model_name``
(``ontime-delay`` for the default data, ``ontime-<data.name>`` for a table of one's own), and is
read from each version's ``model_tag``, never assumed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ontime.errors import OntimeError

log = logging.getLogger(__name__)

ARTIFACT = "ontime-delay"  # the DVC artifact (dvc.yaml), not the model's name in BentoML's store
PACKAGE_FILE = "models/package.json"
PARAMS_FILE = "params.yaml"
BENTOFILE = "bentofile.yaml"
SEMVER = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


class RegistryError(OntimeError):
    """A registry command cannot do what was asked (no such version, nothing to roll back to)."""


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RegistryError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Version:
    version: str  # v1.2.0
    commit: str
    package: dict[str, Any]  # models/package.json at the commit

    @property
    def key(self) -> tuple[int, int, int]:
        m = SEMVER.match(self.version)
        assert m is not None
        return int(m[1]), int(m[2]), int(m[3])


@dataclass(frozen=True)
class Assignment:
    stage: str
    number: int
    commit: str


def _tags(pattern: str, cwd: Path | None) -> list[tuple[str, str]]:
    """(tag, commit it points at) for tags matching the glob ``pattern``."""
    out = git(
        "for-each-ref",
        "--format=%(refname:short) %(*objectname) %(objectname)",
        f"refs/tags/{pattern}",
        cwd=cwd,
    )
    rows = []
    for line in filter(None, out.splitlines()):
        name, *shas = line.split()
        rows.append((name, shas[0]))  # the peeled commit of an annotated tag comes first
    return rows


def package_at(commit: str, cwd: Path | None = None) -> dict[str, Any]:
    try:
        return dict(json.loads(git("show", f"{commit}:{PACKAGE_FILE}", cwd=cwd)))
    except RegistryError:
        raise RegistryError(
            f"commit {commit[:12]} has no committed {PACKAGE_FILE}: run `dvc repro` and commit dvc.lock "
            f"and {PACKAGE_FILE} before registering it"
        ) from None


def versions(cwd: Path | None = None) -> list[Version]:
    """Registered versions, oldest first."""
    found = []
    for name, commit in _tags(f"{ARTIFACT}@v*", cwd):
        version = name.split("@", 1)[1]
        if SEMVER.match(version):
            found.append(Version(version, commit, package_at(commit, cwd)))
    return sorted(found, key=lambda v: v.key)


def assignments(stage: str, cwd: Path | None = None) -> list[Assignment]:
    """Assignments of ``stage``, oldest first."""
    out = []
    for name, commit in _tags(f"{ARTIFACT}#{stage}#*", cwd):
        number = name.rsplit("#", 1)[1]
        if number.isdigit():
            out.append(Assignment(stage, int(number), commit))
    return sorted(out, key=lambda a: a.number)


def stages(cwd: Path | None = None) -> list[str]:
    names = {name.split("#")[1] for name, _ in _tags(f"{ARTIFACT}#*", cwd) if name.count("#") == 2}
    return sorted(names)


def version_of(commit: str, cwd: Path | None = None) -> Version:
    matches = [v for v in versions(cwd) if v.commit == commit]
    if not matches:
        raise RegistryError(f"commit {commit[:12]} is not a registered version of {ARTIFACT}")
    return matches[-1]


def current(stage: str, cwd: Path | None = None) -> Version:
    history = assignments(stage, cwd)
    if not history:
        raise RegistryError(
            f"no version is in stage {stage!r}; run `ontime registry promote --stage {stage}`"
        )
    return version_of(history[-1].commit, cwd)


def next_version(existing: list[Version], bump: Literal["major", "minor", "patch"]) -> str:
    if not existing:
        return "v1.0.0"
    major, minor, patch = existing[-1].key
    if bump == "major":
        return f"v{major + 1}.0.0"
    if bump == "minor":
        return f"v{major}.{minor + 1}.0"
    return f"v{major}.{minor}.{patch + 1}"


def register(
    rev: str, version: str | None, bump: Literal["major", "minor", "patch"], cwd: Path | None = None
) -> Version:
    """The version registered on ``rev``'s commit, registering it (a new tag) when it has none."""
    commit = git("rev-parse", f"{rev}^{{commit}}", cwd=cwd)
    package = package_at(commit, cwd)
    existing = versions(cwd)
    on_commit = [v for v in existing if v.commit == commit]
    if on_commit and version in (None, on_commit[-1].version):
        return on_commit[-1]
    if version is not None:
        if not SEMVER.match(version):
            raise RegistryError(f"version {version!r} is not semantic (vMAJOR.MINOR.PATCH, e.g. v1.2.0)")
        if any(v.version == version for v in existing):
            raise RegistryError(
                f"{ARTIFACT}@{version} already exists; pick another version or omit --version"
            )
    name = version or next_version(existing, bump)
    git(
        "tag",
        "-a",
        f"{ARTIFACT}@{name}",
        commit,
        "-m",
        f"Registering artifact {ARTIFACT} version {name}",
        cwd=cwd,
    )
    log.info("registry: registered %s@%s on %s (model %s)", ARTIFACT, name, commit[:12], package["model_tag"])
    return Version(name, commit, package)


def assign(stage: str, version: Version, cwd: Path | None = None, *, reason: str = "") -> Assignment:
    """A new assignment of ``stage`` to ``version``: an annotated tag, so git keeps who (the tagger),
    when (its date) and why (``reason``, the message's body) for ``history``."""
    number = max((a.number for a in assignments(stage, cwd)), default=0) + 1
    message = f"Assigning stage {stage} to artifact {ARTIFACT} version {version.version}"
    if reason.strip():
        message += "\n\n" + reason.strip()
    git("tag", "-a", f"{ARTIFACT}#{stage}#{number}", version.commit, "-m", message, cwd=cwd)
    log.info(
        "registry: %s is now %s@%s (model %s)", stage, ARTIFACT, version.version, version.package["model_tag"]
    )
    return Assignment(stage, number, version.commit)


def promote(
    rev: str = "HEAD",
    *,
    stage: str = "prod",
    version: str | None = None,
    bump: Literal["major", "minor", "patch"] = "minor",
    reason: str = "",
    cwd: Path | None = None,
) -> Version:
    """Register ``rev`` (if it is not yet a version) and assign it to ``stage``; ``reason`` is kept
    in the assignment's tag (``history``)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", stage):
        raise RegistryError(f"stage {stage!r}: use lowercase letters, digits and '-' (e.g. prod, staging)")
    registered = register(rev, version, bump, cwd)
    assign(stage, registered, cwd, reason=reason)
    return registered


def rollback(stage: str = "prod", cwd: Path | None = None, *, reason: str = "") -> Version:
    """Assign ``stage`` again to the version it held before the current one."""
    history = assignments(stage, cwd)
    if not history:
        raise RegistryError(f"no version is in stage {stage!r}; nothing to roll back")
    now = history[-1].commit
    previous = next((a.commit for a in reversed(history) if a.commit != now), None)
    if previous is None:
        raise RegistryError(f"stage {stage!r} has only ever held one version; nothing to roll back to")
    target = version_of(previous, cwd)
    assign(stage, target, cwd, reason=f"rollback: {reason.strip() or 'no reason given'}")
    return target


@dataclass(frozen=True)
class Event:
    """One assignment of a stage, as ``history`` shows it."""

    stage: str
    number: int
    version: str
    commit: str
    who: str
    when: str  # ISO 8601, the tag's date
    why: str


def history(stage: str | None = None, cwd: Path | None = None) -> list[Event]:
    """Every assignment (of ``stage``, or of all stages), oldest first: version, who, when, why."""
    fields = ["refname:short", "*objectname", "taggername", "taggeremail", "taggerdate:iso-strict"]
    fmt = "%00".join(f"%({f})" for f in fields) + "%00%(contents:body)%01"  # NUL between fields
    out = git("for-each-ref", f"--format={fmt}", f"refs/tags/{ARTIFACT}#{stage or '*'}#*", cwd=cwd)
    by_commit = {v.commit: v.version for v in versions(cwd)}
    events = []
    for record in filter(None, (r.strip("\n") for r in out.split("\x01"))):
        name, commit, who, email, when, body = record.split("\x00")
        _, tag_stage, number = name.split("#")
        if not number.isdigit():
            continue
        events.append(
            Event(
                tag_stage,
                int(number),
                by_commit.get(commit, "?"),
                commit,
                f"{who} {email}",
                when,
                body.strip(),
            )
        )
    return sorted(events, key=lambda e: (e.when, e.stage, e.number))


def history_table(stage: str | None = None, cwd: Path | None = None) -> str:
    lines = [f"{'when':<25} {'stage':<8} {'#':>3} {'version':<9} {'who':<30} why"]
    for e in history(stage, cwd):
        why = " | ".join(line for line in e.why.splitlines() if line.strip()) or "-"
        lines.append(f"{e.when:<25} {e.stage:<8} {e.number:>3} {e.version:<9} {e.who:<30} {why}")
    return "\n".join(lines)


def table(cwd: Path | None = None) -> str:
    """Every version: commit, champion, the stages it is in now, its source data's md5, model tag."""
    held: dict[str, list[str]] = {}
    for s in stages(cwd):
        try:
            held.setdefault(current(s, cwd).version, []).append(s)
        except RegistryError:
            continue
    lines = [f"{'version':<10} {'commit':<12} {'champion':<14} {'stages':<12} {'source data':<14} model"]
    for v in versions(cwd):
        source = v.package.get("source_data")
        data = ",".join(str(h)[:12] for h in source.values()) if isinstance(source, dict) else "?"
        lines.append(
            f"{v.version:<10} {v.commit[:12]:<12} {v.package.get('champion', '?')!s:<14} "
            f"{','.join(held.get(v.version, [])) or '-':<12} {data:<14} {v.package['model_tag']}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- BentoML store ---
def referenced_packages(cwd: Path | None = None) -> list[dict[str, Any]]:
    """The package.json of every registered version, and the workspace's."""
    packages = [v.package for v in versions(cwd)]
    workspace = (cwd or Path(".")) / PACKAGE_FILE
    if workspace.is_file():
        packages.append(json.loads(workspace.read_text()))
    return packages


def referenced_tags(cwd: Path | None = None) -> set[str]:
    """Model and Bento tags named by the workspace's package.json and by every registered version."""
    refs: set[str] = set()
    for package in referenced_packages(cwd):
        refs |= {str(package["model_tag"]), str(package["bento_tag"])}
    return refs


def _name(tag: str) -> str:
    return tag.split(":", 1)[0]


def store_names(cwd: Path | None = None) -> tuple[set[str], set[str]]:
    """The model names and Bento names this repository packages into the store: those of every
    package.json the registry knows, the workspace's params ``serve.model_name`` and its
    bentofile's ``name`` (so a store with no version yet still has names to prune)."""
    packages = referenced_packages(cwd)
    models = {_name(str(p["model_tag"])) for p in packages}
    bentos = {_name(str(p["bento_tag"])) for p in packages}
    root = cwd or Path(".")
    if (root / PARAMS_FILE).is_file():
        serve = (yaml.safe_load((root / PARAMS_FILE).read_text()) or {}).get("serve") or {}
        if serve.get("model_name"):
            models.add(str(serve["model_name"]))
    if (root / BENTOFILE).is_file():
        bento = (yaml.safe_load((root / BENTOFILE).read_text()) or {}).get("name")
        if bento:
            bentos.add(str(bento))
    return models, bentos


def prune(*, dry_run: bool, cwd: Path | None = None) -> list[str]:
    """Delete the models and Bentos of this repository's names (:func:`store_names`) that neither
    the workspace nor a version names; models of other names (other projects) are never touched."""
    import bentoml

    keep = referenced_tags(cwd)
    model_names, bento_names = store_names(cwd)
    bentos = [
        str(b.tag) for b in bentoml.bentos.list() if b.tag.name in bento_names and str(b.tag) not in keep
    ]
    models = [
        str(m.tag) for m in bentoml.models.list() if m.tag.name in model_names and str(m.tag) not in keep
    ]
    for tag in [*bentos, *models]:
        if dry_run:
            log.info("registry prune: would delete %s", tag)
            continue
        (bentoml.bentos.delete if tag in bentos else bentoml.models.delete)(tag)
        log.info("registry prune: deleted %s", tag)
    return [*bentos, *models]


def serve_command(stage: str, host: str, port: int) -> list[str]:
    """``bentoml serve`` of the Bento that ``stage``'s version names; it must be in the store."""
    import bentoml
    from bentoml.exceptions import NotFound

    version = current(stage)
    bento = str(version.package["bento_tag"])
    try:
        bentoml.bentos.get(bento)
    except NotFound:
        raise RegistryError(
            f"{ARTIFACT}@{version.version} ({stage}) is Bento {bento}, which is not in the BentoML store "
            f"($BENTOML_HOME); re-create it (tags are content hashes, so it comes back identical): "
            f"`git checkout {ARTIFACT}@{version.version} && dvc pull && dvc repro --force --single-item "
            "package`, then come back to your branch"
        ) from None
    log.info("registry: serving %s@%s (%s): %s", ARTIFACT, version.version, stage, bento)
    return [str(Path(sys.executable).parent / "bentoml"), "serve", bento, "--host", host, "--port", str(port)]


def main(action: str, **kw: Any) -> int:
    if action == "list":
        print(table())
    elif action == "promote":
        v = promote(kw["rev"], stage=kw["stage"], version=kw["version"], bump=kw["bump"], reason=kw["reason"])
        tags = f"{v.package['model_tag']} (Bento {v.package['bento_tag']})"
        print(f"{ARTIFACT}@{v.version} -> {kw['stage']}: {tags}")
        print("share it: git push --tags (and dvc push)")
    elif action == "rollback":
        v = rollback(kw["stage"], reason=kw["reason"])
        print(f"{kw['stage']} rolled back to {ARTIFACT}@{v.version}: {v.package['model_tag']}")
    elif action == "history":
        print(history_table(kw["stage"]))
    elif action == "which":
        v = current(kw["stage"])
        print(v.package["bento_tag"] if kw["bento"] else v.package["model_tag"])
    elif action == "serve":
        cmd = serve_command(kw["stage"], kw["host"], kw["port"])
        os.execv(cmd[0], cmd)
    elif action == "prune":
        doomed = prune(dry_run=kw["dry_run"])
        print("\n".join(doomed) if doomed else "nothing to prune")
    return 0


# ------------------------------------------------------------------------------ command line ---
SUMMARY = "Model registry: versions, promote, roll back, serve, prune."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ontime registry ACTION``: its description, actions and their options."""
    parser.description = (
        "The champion is the DVC artifact `ontime-delay` (whatever the data); versions "
        "(`ontime-delay@v1.2.0`) and stage assignments (`ontime-delay#prod#3`) are git tags in GTO's "
        "format. Each version's commit names, in models/package.json, the pinned model (named "
        "params serve.model_name in BentoML's store) and Bento it serves."
    )
    acts = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    acts.add_parser("list", help="every version: commit, champion, stages, model tag")
    a = acts.add_parser("promote", help="register a commit as a version (if new) and assign it to a stage")
    a.add_argument("--rev", default="HEAD", help="the commit to promote (default: %(default)s)")
    a.add_argument("--stage", default="prod", help="stage to assign (default: %(default)s)")
    a.add_argument("--version", default=None, help="version to register, e.g. v1.2.0 (default: bump)")
    a.add_argument("--bump", choices=["major", "minor", "patch"], default="minor", help="(default: minor)")
    a.add_argument("--reason", default="", help="why: kept in the assignment's tag (`registry history`)")
    a = acts.add_parser("rollback", help="assign a stage again to the version it held before")
    a.add_argument("--stage", default="prod", help="(default: %(default)s)")
    a.add_argument("--reason", default="", help="why: kept in the assignment's tag (`registry history`)")
    a = acts.add_parser("history", help="every stage assignment: when, stage, version, who, why")
    a.add_argument("--stage", default=None, help="one stage only (default: all)")
    a = acts.add_parser("which", help="print the model tag (or --bento: the Bento tag) a stage serves")
    a.add_argument("--stage", default="prod", help="(default: %(default)s)")
    a.add_argument("--bento", action="store_true", help="print the Bento tag instead of the model tag")
    a = acts.add_parser("serve", help="`bentoml serve` the Bento of a stage's version, by its pinned tag")
    a.add_argument("--stage", default="prod", help="(default: %(default)s)")
    a.add_argument("--host", default="127.0.0.1", help="(default: %(default)s)")
    a.add_argument("--port", type=int, default=3000, help="(default: %(default)s)")
    a = acts.add_parser(
        "prune",
        help="delete this repository's models/Bentos (the names package.json files, params "
        "serve.model_name and the bentofile use) that no version or the workspace names",
    )
    a.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")


def run(args: argparse.Namespace) -> int:
    """``main`` with the action and its options (those its sub-parser declares), each by its name."""
    options = {k: v for k, v in vars(args).items() if k not in ("run", "action", "command", "verbose")}
    return main(action=args.action, **options)
