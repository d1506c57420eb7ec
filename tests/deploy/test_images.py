"""The container images, built the way scripts/build-images.sh builds them
(buildah, offline: a Debian base made by mmdebstrap, binaries built on this
host), and the binaries actually run inside them. Needs root (buildah's
chroot isolation); skipped otherwise, like the Rust tests marked "needs root".

The mmdebstrap bases are cached in $KCRED_TEST_CACHE (default
/var/cache/kcred-test), so only the first run pays for them."""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import REPO

CACHE = pathlib.Path(os.environ.get("KCRED_TEST_CACHE", "/var/cache/kcred-test"))
# The test's own image store (not the machine's), kept with the cache.
STORAGE = [
    "--root", str(CACHE / "containers" / "storage"),
    "--runroot", f"/run/kcred-test-containers-{hashlib.sha256(str(CACHE).encode()).hexdigest()[:8]}",
    "--storage-driver", "vfs",
]
# Binaries built on this host by `cargo build --workspace --bins` (what
# scripts/test.sh does before the tests).
PREBUILT = pathlib.Path(os.environ.get("KCRED_PREBUILT_DIR", REPO / "target" / "debug"))
VERSION = re.search(r'^version = "(.+)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (buildah chroot isolation)")


def buildah(*args: str) -> str:
    out = subprocess.run(["buildah", *STORAGE, *args], capture_output=True, text=True)
    assert out.returncode == 0, f"buildah {' '.join(args)}: {out.stderr}"
    return out.stdout.strip()


def base_image(packages: list[str]) -> str:
    """A bookworm base holding `packages`, from Debian packages (mmdebstrap),
    imported once into the test's image store."""
    key = hashlib.sha256(",".join(sorted(packages)).encode()).hexdigest()[:12]
    tag = f"localhost/kcred-test-base:bookworm-{key}"
    exists = subprocess.run(["buildah", *STORAGE, "inspect", "--type", "image", tag], capture_output=True)
    if exists.returncode == 0:
        return tag
    tar = CACHE / "images" / f"bookworm-{key}.tar"
    if not tar.exists():
        tar.parent.mkdir(parents=True, exist_ok=True)
        partial = tar.with_suffix(".partial.tar")
        subprocess.run(
            ["mmdebstrap", "--quiet", "--variant=apt", "--include=" + ",".join(packages), "bookworm", str(partial)],
            check=True,
        )
        partial.rename(tar)
    ctr = buildah("from", "scratch")
    try:
        root = buildah("mount", ctr)
        subprocess.run(["tar", "-C", root, "-xf", str(tar)], check=True)
        buildah("umount", ctr)
        buildah("commit", "--quiet", ctr, tag)
    finally:
        buildah("rm", ctr)
    return tag


def stripped(binaries: list[str], into: pathlib.Path) -> pathlib.Path:
    """Copies of this host's binaries without debug info: a debug build is
    mostly DWARF, which the image store would copy several times."""
    for name in binaries:
        subprocess.run(["strip", "--strip-debug", "-o", str(into / name), str(PREBUILT / name)], check=True)
    return into


def build(component: str, base: str, prebuilt: pathlib.Path) -> str:
    """scripts/build-images.sh --prebuilt for one component; the image name."""
    env = dict(
        os.environ,
        IMAGE_PREFIX="localhost/kcred-test",
        BUILDAH_OPTS=" ".join(STORAGE),
        BUD_OPTS="--pull-never --isolation chroot",
    )
    script = REPO / "scripts" / "build-images.sh"
    subprocess.run(
        [str(script), "--prebuilt", str(prebuilt), "--base", base, component], cwd=REPO, env=env, check=True
    )
    [name] = subprocess.run(
        [str(script), "--list", component], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return name


class Container:
    """A working container of an image, removed (with the image) on exit."""

    def __init__(self, image: str):
        self.image = image

    def __enter__(self):
        self.ctr = buildah("from", "--pull-never", self.image)
        self.root = pathlib.Path(buildah("mount", self.ctr))
        return self

    def run(self, *cmd: str) -> str:
        """Runs `cmd` as the image's user; its stdout. (Read back from a file
        in the container: buildah's chroot runs now and then lose the
        output of a process that exits at once.)"""
        buildah(
            "run", "--isolation", "chroot", self.ctr, "--",
            "sh", "-c", '"$@" >/tmp/kcred-test.out', "sh", *cmd,
        )
        return (self.root / "tmp" / "kcred-test.out").read_text().strip()

    def config(self) -> dict:
        return json.loads(buildah("inspect", "--type", "image", self.image))["OCIv1"]["config"]

    def __exit__(self, *exc):
        buildah("rm", self.ctr)
        buildah("rmi", self.image)


@pytest.fixture(scope="module", autouse=True)
def tools():
    for tool in ["buildah", "mmdebstrap", "strip"]:
        assert shutil.which(tool), f"{tool} is missing: scripts/install-deps.sh installs it"


def test_driver_image_runs_the_driver_with_only_its_runtime_libraries(tmp_path):
    base = base_image(["libgssapi-krb5-2", "ca-certificates"])
    prebuilt = stripped(["kcred-csi-driver"], tmp_path)
    with Container(build("driver", base, prebuilt)) as c:
        assert c.run("/usr/local/bin/kcred-csi-driver", "--version") == f"kcred-csi-driver {VERSION}"
        help_text = c.run("/usr/local/bin/kcred-csi-driver", "--help")
        assert "--log-format" in help_text
        linked = c.run("ldd", "/usr/local/bin/kcred-csi-driver")
        assert "not found" not in linked and "libgssapi_krb5.so.2" in linked
        config = c.config()
        assert config["Entrypoint"] == ["/usr/local/bin/kcred-csi-driver"]
        # Root by necessity (mounts); said explicitly, not inherited.
        assert config["User"] == "0:0"
        labels = config["Labels"]
        assert labels["org.opencontainers.image.title"] == "kcred-csi-driver"
        assert labels["org.opencontainers.image.version"] == VERSION
        assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_controller_image_runs_unprivileged_with_the_mit_tools_it_drives(tmp_path):
    base = base_image(
        ["libgssapi-krb5-2", "ca-certificates", "krb5-user", "ldap-utils", "libsasl2-modules-gssapi-mit"]
    )
    prebuilt = stripped(["kcred-controller", "kcredctl"], tmp_path)
    with Container(build("controller", base, prebuilt)) as c:
        assert c.run("/usr/local/bin/kcred-controller", "--version") == f"kcred-controller {VERSION}"
        assert c.run("/usr/local/bin/kcredctl", "--version") == f"kcredctl {VERSION}"
        tools = "kadmin kinit ldapsearch ldapmodify"
        assert c.run("sh", "-c", f"for t in {tools}; do command -v $t; done").split() == [
            f"/usr/bin/{t}" for t in tools.split()
        ]
        # The Kerberos bind to Active Directory needs SASL's GSSAPI module.
        assert c.run("sh", "-c", "ls /usr/lib/*/sasl2/libgssapiv2.so*").startswith("/usr/lib/")
        # The image's user, as the container runs.
        assert c.run("id", "-u") == "10001"
        assert c.run("stat", "-c", "%U %a", "/var/lib/kcred") == "kcred 700"
        config = c.config()
        assert config["User"] == "10001:10001"
        assert config["Cmd"] == ["serve", "--config", "/etc/kcred/controller.toml"]
        assert config["Labels"]["org.opencontainers.image.title"] == "kcred-controller"
