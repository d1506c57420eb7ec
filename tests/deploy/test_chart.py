"""The Helm chart as the real Helm engine renders it: lint-clean, valid for
Kubernetes, and saying what a CSI node driver for kcred must say."""

import subprocess

import kubernetes_validate
import pytest
from helm_python.chart import lint
from helm_python.errors import HelmRenderError, HelmValuesError

from conftest import CHART, REPO, REQUIRED, merge, render

# The chart's kubeVersion floor and the newest schemas kubernetes-validate has.
KUBERNETES_VERSIONS = ["1.25.0", "1.37.0"]

# prometheus-operator kinds: no built-in schema; checked structurally below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "PodMonitor"), ("monitoring.coreos.com/v1", "ServiceMonitor")}

VALUE_SETS = {
    "defaults": {},
    "development, no TLS, no identity": {
        "controller": {"endpoint": "http://10.0.0.5:7420", "caConfigMap": "", "service": ""},
        "nodeIdentity": {"enabled": False},
    },
    "mTLS only": {
        "nodeIdentity": {"enabled": False},
        "clientCertificate": {"enabled": True},
    },
    "psat, no host keytab": {
        "nodeIdentity": {"enabled": False},
        "psat": {"enabled": True},
        "controller": {"service": ""},
    },
    "everything on": {
        "clientCertificate": {"enabled": True},
        "podToken": {"enabled": True, "audience": "kcred.example.com", "expirationSeconds": 900},
        "metrics": {
            "enabled": True,
            "service": {"enabled": True, "annotations": {"example.com/team": "platform"}},
            "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "serviceMonitor": {"enabled": True, "interval": "1m"},
        },
        "images": {
            "driver": {"repository": "registry.example.com/kcred/csi-driver", "digest": "sha256:" + "a" * 64},
            "nodeDriverRegistrar": {"digest": "sha256:" + "b" * 64},
            "livenessProbe": {"digest": "sha256:" + "c" * 64},
        },
        "namespace": {"create": True},
        "kubeletDir": "/var/lib/k0s/kubelet/",
        "logFormat": "json",
        "imagePullSecrets": [{"name": "regcred"}],
        "nodeIdentity": {"principal": "host/$(NODE_NAME).example.com", "spake": True},
        "controller": {"tlsServerName": "controller.example.com"},
    },
    "no priority class": {"priorityClassName": "", "criticalPodsQuota": {"enabled": False}},
}


@pytest.mark.parametrize("label", VALUE_SETS)
def test_chart_lints_without_warnings(label):
    report = lint(str(CHART), values=merge(REQUIRED, VALUE_SETS[label]), namespace="kcred", strict=True)
    assert report["errors"] == [], report
    # Severity 1 is informational ("icon is recommended"); 2 and 3 are
    # warnings and errors.
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("label", VALUE_SETS)
def test_every_rendered_object_is_valid_kubernetes(label, version):
    rendered = render(VALUE_SETS[label])
    assert rendered.objects, "nothing rendered"
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        # strict: unknown fields (typos) are errors too.
        kubernetes_validate.validate(obj, version, strict=True)


def test_csidriver_declares_an_ephemeral_node_only_driver_that_kubelet_republishes():
    spec = render().one("CSIDriver")["spec"]
    assert render().one("CSIDriver")["metadata"]["name"] == "csi.kcred.io"
    assert spec["attachRequired"] is False
    assert spec["podInfoOnMount"] is True
    assert spec["requiresRepublish"] is True
    assert spec["volumeLifecycleModes"] == ["Ephemeral"]
    assert spec["fsGroupPolicy"] == "None"


def test_kubelet_passes_pods_tokens_for_the_kcred_audience_by_default_and_the_driver_forwards_them():
    rendered = render()
    spec = rendered.one("CSIDriver")["spec"]
    assert spec["tokenRequests"] == [{"audience": "kcred", "expirationSeconds": 3600}]
    assert "--pod-token-audience=kcred" in rendered.container("driver")["args"]
    assert "tokenRequests" not in render({"podToken": {"enabled": False}}).one("CSIDriver")["spec"]


def test_token_requests_carry_the_configured_audience_when_pod_tokens_are_enabled():
    rendered = render({"podToken": {"enabled": True, "audience": "kcred.example.com", "expirationSeconds": 900}})
    spec = rendered.one("CSIDriver")["spec"]
    assert spec["tokenRequests"] == [{"audience": "kcred.example.com", "expirationSeconds": 900}]
    assert "--pod-token-audience=kcred.example.com" in rendered.container("driver")["args"]


def env_of(rendered, container="driver"):
    return {e["name"]: e.get("value") for e in rendered.container(container)["env"]}


def test_the_nodes_login_uses_spake_only_when_asked():
    assert "KCRED_KERBEROS_SPAKE" not in env_of(render({}))
    assert env_of(render({"nodeIdentity": {"spake": True}}))["KCRED_KERBEROS_SPAKE"] == "true"


def test_psat_mounts_the_drivers_own_projected_token_for_the_kcred_audience_and_no_host_keytab():
    rendered = render({"nodeIdentity": {"enabled": False}, "psat": {"enabled": True}})
    volume = rendered.volume("psat-token")
    assert volume["projected"]["sources"] == [
        {"serviceAccountToken": {"audience": "kcred", "expirationSeconds": 3600, "path": "token"}}
    ]
    mounts = {m["name"]: m for m in rendered.container("driver")["volumeMounts"]}
    assert mounts["psat-token"]["readOnly"] is True
    env = env_of(rendered)
    assert env["KCRED_PSAT_TOKEN_FILE"] == mounts["psat-token"]["mountPath"] + "/token"
    assert "KCRED_NODE_KEYTAB" not in env
    assert "node-keytab" not in mounts
    # Only the driver container holds the token.
    for other in ["node-driver-registrar", "liveness-probe"]:
        assert "psat-token" not in {m["name"] for m in rendered.container(other)["volumeMounts"]}
    pod = rendered.one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False, "no API token, only the kcred-audience one"


def test_psat_audience_is_configurable_and_off_by_default():
    rendered = render({"nodeIdentity": {"enabled": False}, "psat": {"enabled": True, "audience": "kcred.example.com"}})
    assert rendered.volume("psat-token")["projected"]["sources"][0]["serviceAccountToken"]["audience"] == (
        "kcred.example.com"
    )
    default = render()
    assert "KCRED_PSAT_TOKEN_FILE" not in env_of(default)
    with pytest.raises(AssertionError):
        default.volume("psat-token")


def test_psat_and_a_host_keytab_together_are_refused():
    with pytest.raises(HelmRenderError, match="choose one"):
        render({"psat": {"enabled": True}})


def test_pods_directory_is_mounted_bidirectionally_at_kubelets_own_path():
    for kubelet_dir in ["/var/lib/kubelet", "/var/lib/k0s/kubelet/"]:
        rendered = render({"kubeletDir": kubelet_dir})
        want = kubelet_dir.rstrip("/") + "/pods"
        mounts = [m for m in rendered.container("driver")["volumeMounts"] if m["name"] == "pods-dir"]
        assert mounts == [{"name": "pods-dir", "mountPath": want, "mountPropagation": "Bidirectional"}]
        assert rendered.volume("pods-dir")["hostPath"] == {"path": want, "type": "Directory"}
        assert f"--kubelet-dir={kubelet_dir.rstrip('/')}" in rendered.container("driver")["args"]
        assert rendered.container("driver")["securityContext"]["privileged"] is True


def test_registrar_and_liveness_sidecars_watch_the_driver_and_the_registrar_probes_itself():
    rendered = render()
    plugin = "/var/lib/kubelet/plugins/csi.kcred.io"
    registrar = rendered.container("node-driver-registrar")
    assert "registry.k8s.io/sig-storage/csi-node-driver-registrar:" in registrar["image"]
    assert f"--kubelet-registration-path={plugin}/csi.sock" in registrar["args"]
    probe = registrar["livenessProbe"]["exec"]["command"]
    assert probe[0] == "/csi-node-driver-registrar"
    assert "--mode=kubelet-registration-probe" in probe
    assert f"--kubelet-registration-path={plugin}/csi.sock" in probe
    # The probe reads the marker the registrar writes beside the
    # registration path, so that directory must be mounted there.
    assert {"name": "registration-probe", "mountPath": plugin} in registrar["volumeMounts"]
    assert rendered.volume("registration-probe") == {"name": "registration-probe", "emptyDir": {}}
    assert rendered.volume("registration-dir")["hostPath"]["path"] == "/var/lib/kubelet/plugins_registry"

    liveness = rendered.container("liveness-probe")
    assert "registry.k8s.io/sig-storage/livenessprobe:" in liveness["image"]
    assert "--health-port=9808" in liveness["args"]
    driver = rendered.container("driver")
    assert driver["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 9808, "protocol": "TCP"} in driver["ports"]


def test_node_secrets_are_mounted_read_only_into_the_driver_only():
    rendered = render({"clientCertificate": {"enabled": True}})
    secret_volumes = {"node-keytab", "node-tls-cert", "node-tls-key"}
    for name in ["node-driver-registrar", "liveness-probe"]:
        mounted = {m["name"] for m in rendered.container(name)["volumeMounts"]}
        assert not mounted & secret_volumes, f"{name} mounts {mounted & secret_volumes}"
    driver_mounts = {m["name"]: m for m in rendered.container("driver")["volumeMounts"]}
    for name in secret_volumes:
        assert driver_mounts[name]["readOnly"] is True
        assert rendered.volume(name)["hostPath"]["type"] == "File"


def test_mtls_passes_the_nodes_own_certificate_to_the_driver():
    rendered = render(
        {
            "nodeIdentity": {"enabled": False},
            "clientCertificate": {"enabled": True, "certHostPath": "/etc/pki/node.crt", "keyHostPath": "/etc/pki/node.key"},
        }
    )
    env = {e["name"]: e.get("value") for e in rendered.container("driver")["env"]}
    assert env["KCRED_TLS_CERT"] == "/etc/kcred-node-tls/tls.crt"
    assert env["KCRED_TLS_KEY"] == "/etc/kcred-node-tls/tls.key"
    assert env["KCRED_CA_FILE"] == "/etc/kcred-ca/ca.crt"
    assert "KCRED_NODE_KEYTAB" not in env
    assert rendered.volume("node-tls-cert")["hostPath"]["path"] == "/etc/pki/node.crt"
    assert rendered.volume("node-tls-key")["hostPath"]["path"] == "/etc/pki/node.key"


def test_image_digests_pin_every_image():
    rendered = render(VALUE_SETS["everything on"])
    assert rendered.container("driver")["image"] == "registry.example.com/kcred/csi-driver@sha256:" + "a" * 64
    assert rendered.container("node-driver-registrar")["image"].endswith("@sha256:" + "b" * 64)
    assert rendered.container("liveness-probe")["image"].endswith("@sha256:" + "c" * 64)
    # Without a digest: repository:tag, the driver's tag defaulting to appVersion.
    plain = render()
    assert plain.container("driver")["image"] == "kcred/csi-driver:0.1.0"


def test_default_driver_image_is_the_one_build_images_builds():
    built = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh"), "--list", "driver"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert built == [render().container("driver")["image"]]


def test_metrics_are_served_and_scraped_on_the_drivers_metrics_port():
    rendered = render(VALUE_SETS["everything on"])
    driver = rendered.container("driver")
    env = {e["name"]: e.get("value") for e in driver["env"]}
    assert env["KCRED_METRICS_ADDR"] == "0.0.0.0:9421"
    assert {"name": "metrics", "containerPort": 9421, "protocol": "TCP"} in driver["ports"]
    assert driver["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert "--log-format=json" in driver["args"]

    pod_labels = rendered.one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    service = rendered.one("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9421, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    # prometheus-operator objects have no schema here: check their shape.
    pm = rendered.one("PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["metadata"]["namespace"] == "kcred"
    assert pm["metadata"]["labels"]["release"] == "prometheus"
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [endpoint] = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"

    sm = rendered.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["interval"] == "1m"


def test_nothing_about_metrics_is_rendered_by_default():
    rendered = render()
    assert not rendered.all("Service") and not rendered.all("PodMonitor") and not rendered.all("ServiceMonitor")
    assert "KCRED_METRICS_ADDR" not in {e["name"] for e in rendered.container("driver")["env"]}


def test_system_node_critical_is_admitted_outside_kube_system_by_a_matching_quota():
    rendered = render(namespace="kcred")
    pod = rendered.one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    quota = rendered.one("ResourceQuota")
    assert quota["metadata"]["namespace"] == "kcred"
    assert quota["spec"]["scopeSelector"]["matchExpressions"] == [
        {"scopeName": "PriorityClass", "operator": "In", "values": ["system-node-critical"]}
    ]
    # kube-system needs no quota, and no class needs none.
    assert not render(namespace="kube-system").all("ResourceQuota")
    unprioritised = render({"priorityClassName": ""})
    assert not unprioritised.all("ResourceQuota")
    assert "priorityClassName" not in unprioritised.one("DaemonSet")["spec"]["template"]["spec"]


def test_namespace_is_rendered_privileged_for_pod_security_when_asked():
    assert not render().all("Namespace")
    ns = render({"namespace": {"create": True}}, namespace="kcred").one("Namespace")
    assert ns["metadata"]["name"] == "kcred"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"podToken": {"enabled": True, "expirationSeconds": 60}}, "/podToken/expirationSeconds"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"images": {"driver": {"digest": "latest"}}}, "/images/driver/digest"),
        ({"metrics": {"enabeld": True}}, "enabeld"),
        ({"kubeletDir": "var/lib/kubelet"}, "/kubeletDir"),
    ],
)
def test_schema_refuses_misspelt_and_invalid_values_naming_them(values, message):
    with pytest.raises(HelmValuesError) as err:
        render(values)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"clientCertificate": {"enabled": True}, "controller": {"endpoint": "http://c:7420", "caConfigMap": ""}}, "clientCertificate.enabled needs TLS"),
        ({"controller": {"caConfigMap": ""}}, "set controller.caConfigMap"),
        ({"metrics": {"podMonitor": {"enabled": True}}}, "need metrics.enabled"),
        ({"controller": {"endpoint": ""}}, "controller.endpoint is required"),
    ],
)
def test_combinations_that_cannot_work_fail_with_a_message(values, message):
    with pytest.raises(HelmRenderError) as err:
        render(values)
    assert message in str(err.value)


def test_notes_tell_the_next_steps_that_are_really_needed():
    notes = render().notes
    assert "kubectl label namespace kcred pod-security.kubernetes.io/enforce=privileged" in notes
    assert "kubectl -n kcred create configmap kcred-ca --from-file=ca.crt=ca.crt" in notes
    assert "is not published anywhere" in notes and "scripts/build-images.sh" in notes
    assert "/etc/krb5.keytab" in notes
    assert "kubectl get csinodes" in notes
    # What is not configured is not claimed.
    assert "Metrics:" not in notes and "psat" not in notes
    assert "Pod tokens:" in notes and "require_pod_token" in notes
    assert "Pod tokens:" not in render({"podToken": {"enabled": False}}).notes
    psat = render({"nodeIdentity": {"enabled": False}, "psat": {"enabled": True}}).notes
    assert "[auth.psat] must name namespace kcred and service account kcred-kcred-csi-driver" in psat
    # A pushed image and a rendered namespace need no such steps.
    done = render({"images": {"driver": {"repository": "registry.example.com/kcred/csi-driver"}}, "namespace": {"create": True}}).notes
    assert "is not published anywhere" not in done
    assert "kubectl label namespace" not in done
    dev = render(VALUE_SETS["development, no TLS, no identity"]).notes
    assert "clear text" in dev and 'auth.mode = "none"' in dev
