"""The chart's webhook configurations and the controller's RBAC, as the
real Helm engine renders them: valid for Kubernetes, calling the
controller by URL with its CA, scoped so the driver's own pods never wait
for the controller, and granting the controller only what it reads."""

import base64

import kubernetes_validate
import pytest
from helm_python.chart import lint
from helm_python.errors import HelmRenderError, HelmValuesError

from conftest import CHART, REQUIRED, merge, render

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()

WEBHOOK = {
    "webhook": {"enabled": True, "url": "https://controller.example.com:7443", "caBundle": CA},
    "controllerAccess": {"enabled": True},
}
# Before 1.28 the API has no matchConditions.
WEBHOOK_OLD_CLUSTER = merge(
    WEBHOOK,
    {
        "webhook": {"matchConditions": False, "namespaceSelector": {"matchLabels": {"kcred.io/webhook": "enabled"}}},
        "controllerAccess": {"user": "kcred-controller"},
    },
)


def webhooks(rendered, kind):
    config = rendered.one(kind)
    assert len(config["webhooks"]) == 1
    return config["webhooks"][0]


@pytest.mark.parametrize(
    "values, versions",
    [(WEBHOOK, ["1.30.0", "1.37.0"]), (WEBHOOK_OLD_CLUSTER, ["1.25.0", "1.37.0"])],
    ids=["match conditions", "old cluster"],
)
def test_webhook_and_rbac_objects_lint_and_are_valid_kubernetes(values, versions):
    report = lint(str(CHART), values=merge(REQUIRED, values), namespace="kcred", strict=True)
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    rendered = render(values)
    kinds = {o["kind"] for o in rendered.objects}
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"} <= kinds
    for version in versions:
        for obj in rendered.objects:
            if obj["apiVersion"].startswith("monitoring.coreos.com"):
                continue
            kubernetes_validate.validate(obj, version, strict=True)


def test_match_conditions_are_not_valid_before_kubernetes_1_28():
    """Why matchConditions can be turned off: older API servers refuse the field."""
    mutating = render(WEBHOOK).one("MutatingWebhookConfiguration")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(mutating, "1.25.0", strict=True)


def test_both_webhooks_call_the_controller_by_url_with_its_ca_for_created_pods():
    rendered = render(WEBHOOK)
    for kind, path in [("MutatingWebhookConfiguration", "/mutate-pods"), ("ValidatingWebhookConfiguration", "/validate-pods")]:
        hook = webhooks(rendered, kind)
        assert hook["clientConfig"] == {"url": "https://controller.example.com:7443" + path, "caBundle": CA}
        assert "service" not in hook["clientConfig"]
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["failurePolicy"] == "Fail"
        assert hook["rules"] == [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}
        ]
        assert hook["matchConditions"][0]["expression"].endswith("k.startsWith('kcred.io/'))")
    assert webhooks(rendered, "MutatingWebhookConfiguration")["reinvocationPolicy"] == "Never"
    # A trailing slash in the URL does not double.
    url = webhooks(render(merge(WEBHOOK, {"webhook": {"url": "https://c.example.com:7443/"}})), "MutatingWebhookConfiguration")
    assert url["clientConfig"]["url"] == "https://c.example.com:7443/mutate-pods"


def test_the_drivers_namespace_and_system_namespaces_never_reach_the_webhook():
    rendered = render(WEBHOOK_OLD_CLUSTER, namespace="kcred-system")
    for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]:
        hook = webhooks(rendered, kind)
        first = hook["namespaceSelector"]["matchExpressions"][0]
        assert first["key"] == "kubernetes.io/metadata.name" and first["operator"] == "NotIn"
        assert {"kcred-system", "kube-system", "kube-node-lease", "kube-public"} <= set(first["values"])
        # The operator's own selector is added, not substituted.
        assert hook["namespaceSelector"]["matchLabels"] == {"kcred.io/webhook": "enabled"}
        assert hook["objectSelector"]["matchExpressions"] == [{"key": "kcred.io/webhook", "operator": "NotIn", "values": ["skip"]}]
        assert "matchConditions" not in hook


def test_controller_may_only_read_pods_and_nodes_and_review_tokens():
    rendered = render(WEBHOOK_OLD_CLUSTER)
    role = rendered.one("ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    ]
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    subjects = {(s["kind"], s["name"]) for s in binding["subjects"]}
    assert subjects == {("ServiceAccount", "kcred-kcred-csi-driver-controller"), ("User", "kcred-controller")}
    secret = next(o for o in rendered.all("Secret"))
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "kcred-kcred-csi-driver-controller"
    # The driver's own account stays without API access.
    accounts = {o["metadata"]["name"]: o for o in rendered.all("ServiceAccount")}
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())


def test_nothing_of_the_webhook_or_rbac_is_rendered_by_default():
    kinds = {o["kind"] for o in render().objects}
    assert not kinds & {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding", "Secret"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"webhook": {"enabled": True, "caBundle": CA}}, "webhook.url is required"),
        ({"webhook": {"enabled": True, "url": "https://c:7443"}}, "webhook.caBundle is required"),
        ({"controllerAccess": {"enabled": True, "serviceAccount": False}}, "set serviceAccount: true or a user"),
    ],
)
def test_incomplete_webhook_settings_fail_with_a_message(values, message):
    with pytest.raises(HelmRenderError) as err:
        render(values)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"webhook": {"url": "http://c:7443"}}, "/webhook/url"),
        ({"webhook": {"failurePolicy": "Retry"}}, "/webhook/failurePolicy"),
        ({"webhook": {"timeoutSeconds": 60}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"caBundle": "not base64!"}}, "/webhook/caBundle"),
        ({"webhook": {"enabeld": True}}, "enabeld"),
    ],
)
def test_schema_refuses_invalid_webhook_values_naming_them(values, message):
    with pytest.raises(HelmValuesError) as err:
        render(values)
    assert message in str(err.value)


def test_notes_name_the_webhook_urls_and_the_controllers_token_only_when_enabled():
    notes = render(WEBHOOK).notes
    assert "https://controller.example.com:7443/mutate-pods and /validate-pods (failurePolicy Fail)" in notes
    assert "Secret kcred-kcred-csi-driver-controller in kcred" in notes
    assert "Webhook:" not in render().notes
