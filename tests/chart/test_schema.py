"""Bad values fail `helm lint` and `helm template` with a message naming the problem."""

from __future__ import annotations

import pytest

from tests.chart.conftest import CHART, CI_VALUES, KUBE_VERSION, NAMESPACE, helm, template_args

pytestmark = pytest.mark.chart

DEFAULT = [p for p in CI_VALUES if p.name == "default-values.yaml"]

# (--set assignments, text expected in helm's error)
BAD_VALUES = {
    "replicas-not-a-number": (["replicaCount=many"], "replicaCount"),
    "negative-replicas": (["replicaCount=-1"], "replicaCount"),
    "unknown-top-level-key": (["replicas=3"], "replicas"),
    "typo-in-nested-key": (["serviceMonitor.enable=true"], "enable"),
    "bad-pull-policy": (["image.pullPolicy=Sometimes"], "pullPolicy"),
    "empty-repository": (["image.repository="], "repository"),
    "privileged-escalation": (
        ["securityContext.allowPrivilegeEscalation=true"],
        "allowPrivilegeEscalation",
    ),
    "root-allowed": (["podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
    "no-memory-limit": (["resources.limits=null"], "limits"),
    "metrics-port-privileged": (["metrics.port=80"], "port"),
    "bad-duration": (["prometheusRule.alerts.consumerLagGrowing.window=15 minutes"], "window"),
    "bad-severity": (["prometheusRule.alerts.down.severity=page"], "severity"),
    "ratio-above-one": (["prometheusRule.alerts.issuerErrors.maxRatio=5"], "maxRatio"),
    "runbook-not-a-url": (["prometheusRule.runbookBaseUrl=docs/runbook.md"], "runbookBaseUrl"),
    "bad-keda-sasl": (["keda.sasl=kerberos"], "sasl"),
    "bad-keda-behavior-policy": (
        ["keda.behavior.scaleDown.policies[0].type=Replicas"],
        "scaleDown",
    ),
    "typo-in-keda-behavior": (
        ["keda.behavior.scaleDown.stabilisationWindowSeconds=60"],
        "stabilis",
    ),
    "network-policy-without-peers": (["networkPolicy.enabled=true"], "to"),
    # cross-field rules enforced by the templates
    "grace-not-above-drain": (
        ["terminationGracePeriodSeconds=25", "drainDeadlineSeconds=20"],
        "terminationGracePeriodSeconds",
    ),
    "keda-above-partitions": (
        ["keda.enabled=true", "keda.partitionCount=3", "keda.maxReplicaCount=4"],
        "partitionCount",
    ),
    "both-config-sources": (["configFile=kafka: {}", "existingConfigMap=cm"], "configFile"),
    "secrets-with-existing-secret": (["existingSecret=creds"], "existingSecret"),
    # a config syncd would refuse at start: the pods would only crash-loop
    "config-without-documents": (["config.documents=null"], "(values: config) has no documents"),
    "config-without-seller": (["config.seller=null"], "(values: config) has no seller"),
    "config-file-without-documents": (
        ["configFile=kafka: {}"],
        "(values: configFile) has no seller and no documents",
    ),
    "config-file-not-yaml": (["configFile=kafka: ["], "configFile is not a YAML mapping"),
}


@pytest.mark.parametrize("sets,message", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_fail_template(sets: list[str], message: str) -> None:
    proc = helm(*template_args(DEFAULT, sets), check=False)
    assert proc.returncode != 0, f"helm template accepted {sets}"
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "sets",
    [BAD_VALUES["unknown-top-level-key"][0], BAD_VALUES["grace-not-above-drain"][0]],
    ids=["schema", "template-check"],
)
def test_bad_values_fail_lint(sets: list[str]) -> None:
    args = [
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for path in DEFAULT:
        args += ["-f", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    proc = helm(*args, check=False)
    assert proc.returncode != 0, proc.stdout


def test_chart_defaults_alone_are_refused_with_the_fix() -> None:
    """A default install would crash-loop (no seller, no documents): helm says so instead."""
    proc = helm(*template_args(), check=False)
    assert proc.returncode != 0, proc.stdout
    for text in (
        "has no seller and no documents",
        "crash-loop",
        "config.seller and config.documents",
        "--set-file configFile=",
        "existingConfigMap",
    ):
        assert text in proc.stderr, proc.stderr


def test_existing_config_map_is_not_checked() -> None:
    """The chart cannot see an existingConfigMap's content: it renders (NOTES say so)."""
    proc = helm(
        *template_args((), ["existingConfigMap=cm", "config=null", "secrets.databaseDsn=x"])
    )
    assert "kind: Deployment" in proc.stdout
