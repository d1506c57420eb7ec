//! The kcred demo: a throwaway MIT realm, the real `kcred-controller` and
//! `kcred-csi-driver` processes, a kubelet stand-in publishing a volume for
//! a pod annotated `kcred.io/keytabs: "HTTP/web.example.com"`, and `kinit`
//! proving the delivered keytab. Run it through `scripts/demo.sh`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kcred_tests::{Kubelet, Realm, TestPod};

const NODE: &str = "demo-node";
const PRINCIPAL: &str = "HTTP/web.example.com";

/// Kills a child process when the demo ends, however it ends.
struct Proc(Child, &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.kill().is_ok() {
            let _ = self.0.wait();
            println!("stopped {}", self.1);
        }
    }
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

fn step(title: &str) {
    println!("\n\x1b[1m==> {title}\x1b[0m");
}

fn show(realm: &Realm, program: &str, args: &[&str]) -> anyhow::Result<bool> {
    println!("$ {program} {}", args.join(" "));
    let out = realm
        .command(program)
        .args(args)
        .output()
        .with_context(|| program.to_string())?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(out.status.success())
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    bail!("{what} did not come up; its log:\n{tail}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo mounts tmpfs: run it as root");
    }
    let controller_bin = sibling_binary("kcred-controller")?;
    let driver_bin = sibling_binary("kcred-csi-driver")?;

    step("Starting a throwaway MIT Kerberos realm on loopback");
    let realm = Realm::start()?;
    realm.add_principal(PRINCIPAL)?;
    println!(
        "realm {} (KDC {}, kadmind {}), principal {PRINCIPAL}@{} created with a random key (kvno {})",
        realm.name(),
        realm.kdc_addr(),
        realm.kadmind_addr(),
        realm.name(),
        realm.kvno(PRINCIPAL)?
    );

    let dir = tempfile::tempdir()?;
    let d = dir.path();
    step("Configuring the controller (master key, policy, pods)");
    let status = Command::new(&controller_bin)
        .arg("generate-master-key")
        .arg(d.join("master.key"))
        .status()?;
    if !status.success() {
        bail!("generate-master-key failed");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let pod = TestPod::with_keytabs("web", "web-0", NODE, PRINCIPAL);
    std::fs::write(
        d.join("policy.toml"),
        "[[role_accounts]]\nlogin = \"websvc\"\nuid = 1500\ngid = 1500\nnamespaces = [\"web\"]\nservice_principals = [\"HTTP/web.example.com\"]\n",
    )?;
    std::fs::write(
        d.join("pods.toml"),
        format!(
            "[[pods]]\nnamespace = \"web\"\nname = \"web-0\"\nuid = \"{}\"\nnode_name = \"{NODE}\"\nrun_as_user = 1500\nrun_as_group = 1500\nannotations = {{ \"kcred.io/keytabs\" = \"{PRINCIPAL}\" }}\n",
            pod.uid
        ),
    )?;
    std::fs::write(
        d.join("controller.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nrealm = \"{}\"\nkrb5_config = \"{}\"\nmaster_key_file = \"{d}/master.key\"\nstore_path = \"{d}/store.redb\"\npolicy_file = \"{d}/policy.toml\"\naudit_log = \"{d}/audit.log\"\naudit_key = \"{d}/audit.key\"\npods_file = \"{d}/pods.toml\"\n\n[kadmin]\nprincipal = \"{}\"\nkeytab = \"{}\"\nwork_dir = \"{d}/extract\"\n\n[auth]\nmode = \"none\"\n",
            realm.name(),
            realm.krb5_conf_path().display(),
            realm.admin_principal(),
            realm.admin_keytab().display(),
            d = d.display()
        ),
    )?;
    for f in ["policy.toml", "pods.toml"] {
        println!(
            "--- {f}\n{}",
            std::fs::read_to_string(d.join(f))?.trim_end()
        );
    }

    step("Starting kcred-controller");
    let clog = d.join("controller.log");
    let _controller = Proc(
        Command::new(&controller_bin)
            .args(["serve", "--config"])
            .arg(d.join("controller.toml"))
            .stdout(Stdio::from(std::fs::File::create(&clog)?))
            .stderr(Stdio::from(std::fs::File::create(&clog)?.try_clone()?))
            .spawn()?,
        "controller",
    );
    wait_for(
        "kcred-controller",
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        &clog,
    )?;
    println!("listening on 127.0.0.1:{port}");

    step("Starting kcred-csi-driver (CSI on a unix socket)");
    let kubelet_dir = d.join("kubelet");
    std::fs::create_dir_all(kubelet_dir.join("pods"))?;
    let socket = d.join("csi/csi.sock");
    let dlog = d.join("driver.log");
    let _driver = Proc(
        Command::new(&driver_bin)
            .arg("--endpoint")
            .arg(&socket)
            .args([
                "--node-id",
                NODE,
                "--controller",
                &format!("http://127.0.0.1:{port}"),
            ])
            .arg("--kubelet-dir")
            .arg(&kubelet_dir)
            .arg("--state-dir")
            .arg(d.join("driver-state"))
            .stdout(Stdio::from(std::fs::File::create(&dlog)?))
            .stderr(Stdio::from(std::fs::File::create(&dlog)?.try_clone()?))
            .spawn()?,
        "driver",
    );
    wait_for("kcred-csi-driver", || socket.exists(), &dlog)?;
    println!("serving CSI on {}", socket.display());

    step("Kubelet publishes the pod's inline CSI volume (NodePublishVolume)");
    let kubelet = Kubelet::connect(&socket, &kubelet_dir).await?;
    let target = kubelet
        .publish(&pod, "kcred")
        .await
        .context("NodePublishVolume")?;
    println!(
        "pod web/web-0 annotated kcred.io/keytabs: \"{PRINCIPAL}\" -> mounted at\n  {}",
        target.display()
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    for line in mounts
        .lines()
        .filter(|l| l.contains(&*target.to_string_lossy()))
    {
        println!("  mount: {line}");
    }
    println!("$ ls -la {}", target.display());
    let _ = Command::new("ls").arg("-la").arg(&target).status();

    step("Proving the keytab with the real MIT tools");
    let keytab = target.join("krb5.keytab");
    show(&realm, "klist", &["-k", "-e", &keytab.to_string_lossy()])?;
    let ok = show(
        &realm,
        "kinit",
        &["-k", "-t", &keytab.to_string_lossy(), PRINCIPAL],
    )?;
    show(&realm, "klist", &[])?;
    println!(
        "KDC kvno of {PRINCIPAL} is still {} (keys were extracted, not randomized)",
        realm.kvno(PRINCIPAL)?
    );

    step("Kubelet unpublishes the volume (NodeUnpublishVolume)");
    kubelet
        .unpublish(&pod, "kcred")
        .await
        .context("NodeUnpublishVolume")?;
    println!(
        "{} exists afterwards: {}",
        target.display(),
        target.exists()
    );

    if ok {
        println!(
            "\n\x1b[1;32mDEMO OK: a pod annotation brought a real keytab into a tmpfs volume, and kinit accepted it.\x1b[0m"
        );
        Ok(())
    } else {
        bail!("kinit with the delivered keytab failed")
    }
}
