"""helm lint --strict, kubernetes-validate --strict and assertions over the rendered chart."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    CI_VALUES,
    DEFAULT_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASES,
    ROOT,
    VALIDATE_VERSIONS,
    Render,
    find,
    helm,
    kinds,
    kubernetes_validate,
    scraped_job,
    template_args,
    tool,
)

pytestmark = pytest.mark.chart

CI = CHART / "ci"
OPTIONAL_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "PodDisruptionBudget",
    "ScaledObject",
    "TriggerAuthentication",
    "NetworkPolicy",
    "Job",
}


def test_ci_value_sets_exist() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "full-values.yaml",
        "existing-values.yaml",
        "configfile-values.yaml",
    }


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=lambda p: p.name if p else "chart-defaults"
)
def test_helm_lint_strict(values: Path | None) -> None:
    args = [
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    if values:
        args += ["-f", str(values)]
    proc = helm(*args, check=False)
    if values is None:
        # The chart's defaults carry no document config: refused, with the reason (item 2).
        assert proc.returncode != 0, proc.stdout
        assert "has no seller and no documents" in proc.stdout + proc.stderr
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("version", VALIDATE_VERSIONS)
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_rendered_manifests_validate_against_kubernetes_schemas(
    values: Path, version: str, release: str
) -> None:
    """`helm template | kubernetes-validate --strict -`: unknown or mistyped fields fail.

    Custom resources (ServiceMonitor, PrometheusRule, ScaledObject) have no schema there and
    are only warned about; their content is asserted below and by promtool.
    """
    manifest = helm(*template_args([values], release=release)).stdout
    proc = subprocess.run(
        [kubernetes_validate(), "--strict", "--quiet", "-k", version, "-"],
        input=manifest,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout, proc.stdout


def _pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return find(docs, "Deployment")["spec"]["template"]["spec"]


def test_defaults_render_only_the_core(render: Render) -> None:
    docs = render([CI / "default-values.yaml"])
    assert kinds(docs) == {"Deployment", "ConfigMap", "Secret", "Service", "ServiceAccount"}
    assert not kinds(docs) & OPTIONAL_KINDS


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_security_defaults(render: Render, values: Path) -> None:
    docs = render([values])
    pods = [_pod_spec(docs)] + [j["spec"]["template"]["spec"] for j in docs if j["kind"] == "Job"]
    for pod in pods:
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp"
            assert mounts["/etc/syncd/secrets"] == "secrets"
            assert container["command"] == ["syncd"]
            assert (
                "limits" in container["resources"] and "memory" in container["resources"]["limits"]
            )
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["tmp"]


def test_probes_use_the_named_metrics_port(render: Render) -> None:
    container = _pod_spec(render([CI / "default-values.yaml"]))["containers"][0]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["args"] == ["run", "-c", "/etc/syncd/config.yaml"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SYNCD_METRICS__PORT"] == "9464"
    assert env["SYNCD_METRICS__HOST"] == "0.0.0.0"


def test_grace_period_exceeds_drain_deadline(render: Render) -> None:
    docs = render([CI / "full-values.yaml"])
    pod = _pod_spec(docs)
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert float(env["SYNCD_PIPELINE__DRAIN_DEADLINE_SECONDS"]) == 30
    assert pod["terminationGracePeriodSeconds"] == 60


def test_config_checksum_changes_with_config(render: Render) -> None:
    def checksum(*sets: str) -> str:
        docs = render([CI / "default-values.yaml"], sets)
        return find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum() == checksum()
    assert checksum() != checksum("config.logging.level=DEBUG")


def test_config_map_holds_the_values_config(render: Render) -> None:
    docs = render([CI / "full-values.yaml"])
    config = yaml.safe_load(find(docs, "ConfigMap", "syncd")["data"]["config.yaml"])
    assert config["kafka"]["security_protocol"] == "SASL_SSL"
    assert config["kafka"]["sasl_password_file"] == "/etc/syncd/secrets/kafka-sasl-password"
    assert config["database"]["dsn_file"] == "/etc/syncd/secrets/database-dsn"


def test_config_file_is_deployed_verbatim(render: Render) -> None:
    docs = render([CI / "configfile-values.yaml"])
    expected = yaml.safe_load((CI / "configfile-values.yaml").read_text())["configFile"]
    assert find(docs, "ConfigMap")["data"]["config.yaml"].strip() == expected.strip()
    assert "Secret" not in kinds(docs)  # existingSecret
    pod = _pod_spec(docs)
    secret_volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert secret_volume["secret"]["secretName"] == "syncd-credentials"


def test_the_two_company_example_renders_as_a_config_file(tmp_path: Path) -> None:
    """config/example.yaml names its sellers under issuers: (one per company), not at the
    top: the chart's config check accepts that."""
    example = ROOT / "config" / "example.yaml"
    proc = helm(*template_args(DEFAULT_VALUES), "--set-file", f"configFile={example}", check=False)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    deployed = yaml.safe_load(find(docs, "ConfigMap")["data"]["config.yaml"])
    assert sorted(deployed["issuers"]) == ["bj", "sh"]


def test_secrets_mount_path_is_configurable(render: Render) -> None:
    docs = render([CI / "default-values.yaml"], ["secretsMountPath=/var/run/secrets/syncd"])
    mounts = {m["name"]: m["mountPath"] for m in _pod_spec(docs)["containers"][0]["volumeMounts"]}
    assert mounts["secrets"] == "/var/run/secrets/syncd"


def test_secret_holds_only_given_credentials(render: Render) -> None:
    secret = find(render([CI / "default-values.yaml"]), "Secret")
    assert set(secret["data"]) == {"database-dsn", "issuer-app-secret"}


def test_existing_secret_and_config_map(render: Render) -> None:
    docs = render([CI / "existing-values.yaml"])
    assert "Secret" not in kinds(docs)
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    pod = _pod_spec(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "syncd-credentials"
    assert volumes["config"]["configMap"]["name"] == "syncd-config"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
    assert mount["subPath"] == "syncd.yaml"
    assert pod["serviceAccountName"] == "erp-apps"
    metadata = find(docs, "Deployment")["spec"]["template"]["metadata"]
    assert "checksum/config" not in metadata.get("annotations", {})
    job = find(docs, "Job")
    job_volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert job_volumes["secrets"]["secret"]["secretName"] == "syncd-credentials"
    assert job_volumes["config"]["configMap"]["name"] == "syncd-config"


def test_topology_spread_across_nodes_by_default(render: Render) -> None:
    spread = _pod_spec(render([CI / "default-values.yaml"]))["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert spread[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "syncd"
    custom = _pod_spec(render([CI / "configfile-values.yaml"]))["topologySpreadConstraints"]
    assert custom[0]["topologyKey"] == "topology.kubernetes.io/zone"


def test_full_toggles(render: Render) -> None:
    docs = render([CI / "full-values.yaml"])
    assert kinds(docs) >= OPTIONAL_KINDS
    deployment = find(docs, "Deployment")
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"

    monitor = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service = find(docs, "Service")
    assert service["spec"]["ports"][0]["name"] == "metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )

    dashboard = find(docs, "ConfigMap", "syncd-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert (
        dashboard["data"]["syncd.json"].strip()
        == (CHART / "dashboards" / "syncd.json").read_text().strip()
    )

    pdb = find(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1

    scaled = find(docs, "ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == 6
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == "syncd-prod"
    assert trigger["metadata"]["bootstrapServers"] == "erp-kafka-bootstrap.kafka.svc:9093"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    auth = find(docs, "TriggerAuthentication")
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {
        "username",
        "password",
        "ca",
    }

    policy = find(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 443, 5432, 9093]
    assert all(rule["to"] for rule in policy["spec"]["egress"])


def test_keda_scale_down_is_paced_by_the_hpa_behavior(render: Render) -> None:
    """cooldownPeriod only delays scaling to zero; between max and 1 replicas the HPA's
    behavior paces scale-down, so the chart exposes it (default: slow, one pod at a time)."""
    spec = find(render([CI / "full-values.yaml"]), "ScaledObject")["spec"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {
        "scaleDown": {
            "stabilizationWindowSeconds": 600,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
        }
    }
    custom = find(
        render(
            [CI / "full-values.yaml"],
            ["keda.behavior.scaleDown.stabilizationWindowSeconds=1200"],
        ),
        "ScaledObject",
    )["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert custom["scaleDown"]["stabilizationWindowSeconds"] == 1200
    plain = find(render([CI / "full-values.yaml"], ["keda.behavior=null"]), "ScaledObject")
    assert "advanced" not in plain["spec"]


def test_extra_objects_are_rendered_through_tpl(render: Render, tmp_path: Path) -> None:
    values = tmp_path / "extra.yaml"
    values.write_text(
        "extraObjects:\n"
        "  - apiVersion: v1\n"
        "    kind: ConfigMap\n"
        "    metadata:\n"
        "      name: '{{ include \"syncd.fullname\" . }}-extra'\n"
        "    data:\n"
        "      namespace: '{{ .Release.Namespace }}'\n"
        "  - |\n"
        "    apiVersion: v1\n"
        "    kind: ServiceAccount\n"
        "    metadata:\n"
        "      name: {{ .Release.Name }}-helper\n"
    )
    docs = render([*DEFAULT_VALUES, values], (), "einvoice")
    extra = find(docs, "ConfigMap", "einvoice-syncd-extra")
    assert extra["data"] == {"namespace": NAMESPACE}
    find(docs, "ServiceAccount", "einvoice-helper")
    assert not [d for d in render(DEFAULT_VALUES) if "extra" in d["metadata"]["name"]]


def test_migration_job_is_a_hook_running_migrate(render: Render) -> None:
    docs = render([CI / "full-values.yaml"])
    job = find(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["syncd"]
    assert container["args"] == ["migrate", "-c", "/etc/syncd/config.yaml"]
    # A pre-install hook runs before the release's ConfigMap/Secret exist: it gets hook copies.
    hook_objects = [
        d
        for d in docs
        if d["kind"] in {"ConfigMap", "Secret"}
        and "helm.sh/hook" in d["metadata"].get("annotations", {})
    ]
    assert {d["kind"] for d in hook_objects} == {"ConfigMap", "Secret"}
    for obj in hook_objects:
        assert int(obj["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0


def test_reconcile_cronjob_is_off_by_default_and_runs_reconcile(render: Render) -> None:
    assert not [d for d in render(DEFAULT_VALUES) if d["kind"] == "CronJob"]
    docs = render(
        DEFAULT_VALUES,
        (
            "reconcile.enabled=true",
            "reconcile.timeZone=Asia/Shanghai",
            "reconcile.days=40",
            "reconcile.document=sales_order",
        ),
    )
    cron = find(docs, "CronJob")
    assert cron["spec"]["timeZone"] == "Asia/Shanghai"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # exit 1 means "exceptions": running again changes nothing
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["syncd"]
    assert container["args"] == [
        "reconcile",
        "-c",
        "/etc/syncd/config.yaml",
        "--days",
        "40",
        "--tz",
        "Asia/Shanghai",
        "--format",
        "json",
        "--document",
        "sales_order",
    ]
    deployment = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"] == deployment["volumes"]  # the daemon's config and secrets
    assert container["securityContext"] == deployment["containers"][0]["securityContext"]


def test_pdb_min_available(render: Render) -> None:
    pdb = find(render([CI / "configfile-values.yaml"]), "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": "50%", "selector": pdb["spec"]["selector"]}


def _notes(tmp_path: Path, sets: Sequence[str] = (), release: str = "syncd") -> str:
    """NOTES.txt rendered via a throw-away template (`helm install --dry-run` wants a cluster)."""
    chart = tmp_path / "syncd"
    if not chart.exists():
        shutil.copytree(CHART, chart)
        (chart / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
            '  notes: {{ include (print $.Template.BasePath "/NOTES.txt") . | quote }}\n'
        )
    args = template_args(DEFAULT_VALUES, sets, release)
    args[2] = str(chart)
    out = helm(*args, "--show-only", "templates/zz-notes.yaml").stdout
    return str(yaml.safe_load(out)["data"]["notes"])


def test_notes_say_how_to_check(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    assert "rollout status deploy/syncd" in notes
    assert "/readyz" in notes
    assert "syncd check-config -c /etc/syncd/config.yaml --live" in notes
    assert "syncd status -c /etc/syncd/config.yaml" in notes
    assert "`seller` and `documents`" in notes
    assert "WARNING" not in notes  # credentials were given, no alerts enabled


@pytest.mark.parametrize("release", RELEASES)
def test_notes_name_the_job_prometheus_sees(render: Render, tmp_path: Path, release: str) -> None:
    sets = ("serviceMonitor.enabled=true", "prometheusRule.enabled=true")
    job = scraped_job(render(DEFAULT_VALUES, sets, release))
    notes = _notes(tmp_path, sets, release)
    assert f'job="{job}"' in notes
    assert f'The alerts select job="{job}",namespace="{NAMESPACE}".' in notes
    if release != job:
        assert f'job="{release}"' not in notes


def test_notes_warn_while_the_runbook_url_is_the_example(tmp_path: Path) -> None:
    enabled = ["prometheusRule.enabled=true"]
    assert "runbookBaseUrl is still the example host" in _notes(tmp_path, enabled)
    ours = "prometheusRule.runbookBaseUrl=https://git.example.net.internal/erp/syncd/runbook.md"
    assert "runbookBaseUrl" not in _notes(tmp_path, [*enabled, ours])
    assert "runbookBaseUrl" not in _notes(tmp_path)  # no alerts, no warning


def test_notes_say_an_existing_config_map_is_not_checked(tmp_path: Path) -> None:
    notes = _notes(tmp_path, ["existingConfigMap=dba-config"])
    assert "ConfigMap dba-config" in notes and "`seller` and `documents`" in notes


def test_tools_are_the_pinned_versions() -> None:
    out = subprocess.run([str(tool("helm")), "version", "--short"], capture_output=True, text=True)
    assert out.stdout.startswith("v3.22.0"), out.stdout
    pinned = re.search(
        r"^require github.com/prometheus/prometheus v(\S+)$",
        (ROOT / "tools" / "go.mod").read_text(),
        re.M,
    )
    assert pinned, "tools/go.mod must pin github.com/prometheus/prometheus"
    out = subprocess.run([str(tool("promtool")), "--version"], capture_output=True, text=True)
    assert f"version {pinned.group(1)} " in out.stdout + out.stderr


def test_tls_files_are_secret_keys_mounted_where_the_config_points(render: Render) -> None:
    """The database CA and the issuer CA / client certificate are Secret keys, mounted as
    files under secretsMountPath for the daemon and the migration job alike, at the paths
    the config's issuer.ca_file & co. and the DSN's sslrootcert name."""
    docs = render([CI / "full-values.yaml"])
    secret = next(
        d
        for d in docs
        if d["kind"] == "Secret" and "helm.sh/hook" not in d["metadata"].get("annotations", {})
    )
    tls_keys = {"database-ca.crt", "issuer-ca.crt", "issuer-client.crt", "issuer-client.key"}
    assert tls_keys <= set(secret["data"])
    config = yaml.safe_load(find(docs, "ConfigMap", "syncd")["data"]["config.yaml"])
    issuer = config["issuer"]
    assert (issuer["ca_file"], issuer["client_cert_file"], issuer["client_key_file"]) == (
        "/etc/syncd/secrets/issuer-ca.crt",
        "/etc/syncd/secrets/issuer-client.crt",
        "/etc/syncd/secrets/issuer-client.key",
    )
    job = find(docs, "Job")["spec"]["template"]["spec"]
    for pod in (_pod_spec(docs), job):
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["secrets"]["mountPath"] == "/etc/syncd/secrets"
        assert mounts["secrets"]["readOnly"] is True
        volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
        assert volume["secret"]["defaultMode"] == 0o440  # libpq accepts a root-owned 0440 key


def test_tls_secret_keys_are_renamable(render: Render) -> None:
    docs = render(
        [CI / "full-values.yaml"],
        ["secretKeys.databaseCaCert=rds-ca.pem", "secretKeys.issuerCaCert=platform-ca.pem"],
    )
    for secret in (d for d in docs if d["kind"] == "Secret"):  # the release's and the hook's
        assert {"rds-ca.pem", "platform-ca.pem"} <= set(secret["data"])
        assert "database-ca.crt" not in secret["data"]


def test_files_archive_mounts_its_claim_and_sets_the_config(render: Render) -> None:
    plain = _pod_spec(render([CI / "default-values.yaml"]))
    assert "files-archive" not in {v["name"] for v in plain["volumes"]}
    docs = render(
        [CI / "default-values.yaml"],
        ["filesArchive.enabled=true", "filesArchive.existingClaim=invoice-files"],
    )
    spec = _pod_spec(docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["files-archive"]["persistentVolumeClaim"] == {"claimName": "invoice-files"}
    container = spec["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["files-archive"] == "/var/lib/syncd/archive"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SYNCD_FILES__ARCHIVE"] == "directory"
    assert env["SYNCD_FILES__DIRECTORY"] == "/var/lib/syncd/archive"
    failed = helm(
        *template_args([CI / "default-values.yaml"], ["filesArchive.enabled=true"]), check=False
    )
    assert failed.returncode != 0 and "existingClaim is required" in failed.stderr
