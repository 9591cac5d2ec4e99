"""Every IAM policy document the program emits, linted with parliament (Duo Labs' IAM linter).

Documents: role trust policies, role inline policies, RolePolicy/Policy, bucket, queue and topic
policies, from both shipped stacks' mocked graphs. Parliament's findings must be empty apart from the
ignores below, each stating why it does not apply; an ignore that no longer matches anything fails
too, so the list cannot outlive its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import parliament
import pytest
from program_harness import ProgramGraph, prefetch, run_program

from policy import rules


@dataclass(frozen=True)
class Finding:
    stack: str
    resource: str
    document: str
    issue: str
    detail: str

    def __str__(self) -> str:
        return f"{self.stack} {self.resource} {self.document}: {self.issue} {self.detail}"


@dataclass(frozen=True)
class Ignore:
    issue: str
    applies: Callable[[Finding], bool]
    why: str


IGNORES = (
    Ignore("MALFORMED",
           lambda f: f.document == "assumeRolePolicy" and "neither Resource nor NotResource" in f.detail,
           "Trust policies are the role's own resource policy: IAM rejects a Resource element there. Parliament "
           "lints every document as an identity policy."),
    Ignore("UNKNOWN_FEDERATION_SOURCE",
           lambda f: f.document == "assumeRolePolicy" and f.detail.endswith(":oidc-provider/"
                                                                             f"{rules.GITHUB_OIDC_HOST}"),
           "Parliament knows only a fixed list of identity providers; GitHub's OIDC provider is the one we use, "
           "and its trust (audience, one repository) is checked by the policy rule oidc-trust-scoped."),
    Ignore("RESOURCE_MISMATCH",
           lambda f: "codestar-connections:UseConnection" in f.detail,
           "CodeStar Connections became CodeConnections (2024): new connections have arn:aws:codeconnections ARNs, "
           "which IAM accepts for both action prefixes. Parliament's action database predates the rename."),
)


def documents(graph: ProgramGraph) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(resource type, resource name, document label, document) for every policy document."""
    found = []
    for r in graph.resources:
        resource = rules.Resource(r.type, r.name, r.urn, r.inputs)
        for label, document in rules.policy_documents(resource):
            found.append((r.type, r.name, label, document))
    return found


def lint(stack: str, graph: ProgramGraph) -> list[Finding]:
    findings = []
    for _, name, label, document in documents(graph):
        analyzed = parliament.analyze_policy_string(json.dumps(document))
        findings.extend(Finding(stack, name, label, f.issue, str(f.detail)) for f in analyzed.findings)
    return findings


def ignored(finding: Finding) -> bool:
    return any(i.issue == finding.issue and i.applies(finding) for i in IGNORES)


# Both shipped stacks, plus the grants only other settings emit: the team's data in its own bucket read by
# the pipeline's jobs (dev) and by the inline build on the GitHub runner (prod, compute build).
TEAM_DATA = {"trainingData": "s3://team-data/churn/2026/", "sampleData": False}
RUNS: dict[str, tuple[str, dict[str, object] | None]] = {
    "dev": ("dev", None),
    "prod": ("prod", None),
    "dev-team-data": ("dev", TEAM_DATA),
    "prod-team-data-inline-build": ("prod", {**TEAM_DATA, "training": {"compute": "build"}}),
}


@pytest.fixture(scope="module")
def graphs() -> dict[str, ProgramGraph]:
    prefetch(list(RUNS.values()))
    return {label: run_program(*run) for label, run in RUNS.items()}


@pytest.mark.parametrize("label", list(RUNS))
def test_every_policy_document_passes_parliament(graphs: dict[str, ProgramGraph], label: str) -> None:
    findings = [str(f) for f in lint(label, graphs[label]) if not ignored(f)]
    assert findings == []


def test_lint_covers_every_kind_of_document(graphs: dict[str, ProgramGraph]) -> None:
    kinds = {(t, label.split("[")[0]) for g in graphs.values() for t, _, label, _ in documents(g)}
    assert {
        (rules.ROLE_TYPE, "assumeRolePolicy"),
        (rules.ROLE_POLICY_TYPE, "policy"),
        (rules.BUCKET_POLICY_TYPE, "policy"),
        (rules.QUEUE_POLICY_TYPE, "policy"),
    } <= kinds


def test_every_ignore_is_still_needed(graphs: dict[str, ProgramGraph]) -> None:
    findings = [f for stack, g in graphs.items() for f in lint(stack, g)]
    unused = [i.issue for i in IGNORES if not any(i.issue == f.issue and i.applies(f) for f in findings)]
    assert unused == []


def test_parliament_reports_a_mistyped_action_in_an_emitted_document(graphs: dict[str, ProgramGraph]) -> None:
    # The lint is live: the same pipeline flags a document with a typo that IAM would silently ignore.
    [(_, name, label, document)] = [d for d in documents(graphs["dev"]) if d[0] == rules.BUCKET_POLICY_TYPE]
    document["Statement"].append({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                                  "Action": "s3:GetObjectt", "Resource": "arn:aws:s3:::b/*"})
    issues = {f.issue for f in parliament.analyze_policy_string(json.dumps(document)).findings}
    assert "UNKNOWN_ACTION" in issues, (name, label, issues)
