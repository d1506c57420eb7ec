"""Shared helpers for the deployment tests: the repository's paths and the
chart rendered by the real Helm engine (helm-python-sdk)."""

import pathlib

import yaml
from helm_python.chart import Chart

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kcred-csi-driver"

# What a real install passes: the controller's endpoint, its CA and its
# service principal (Kerberos node identity, the default).
REQUIRED = {
    "controller": {
        "endpoint": "https://controller.example.com:7420",
        "caConfigMap": "kcred-ca",
        "service": "kcred/controller.example.com@EXAMPLE.COM",
    }
}


def merge(base: dict, extra: dict) -> dict:
    """Deep merge of value dictionaries (extra wins)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class Rendered:
    """One rendering of the chart: its objects and its NOTES."""

    def __init__(self, manifests: dict[str, str]):
        self.notes = ""
        self.objects: list[dict] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.objects.append(doc)

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def container(self, name: str) -> dict:
        pod = self.one("DaemonSet")["spec"]["template"]["spec"]
        for c in pod["containers"]:
            if c["name"] == name:
                return c
        raise AssertionError(f"no container {name}")

    def volume(self, name: str) -> dict:
        pod = self.one("DaemonSet")["spec"]["template"]["spec"]
        for v in pod["volumes"]:
            if v["name"] == name:
                return v
        raise AssertionError(f"no volume {name}")


def render(values: dict | None = None, namespace: str = "kcred", name: str = "kcred") -> Rendered:
    """Renders the chart with REQUIRED plus `values`, as `helm install` would."""
    manifests = Chart.load(str(CHART)).render(
        values=merge(REQUIRED, values or {}), name=name, namespace=namespace, is_install=True
    )
    return Rendered(manifests)
