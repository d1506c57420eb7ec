//! Issue 2: a pod's annotation brings a real keytab from a real MIT KDC
//! into its CSI volume. Every test runs a real realm, the controller and
//! the driver on real sockets, and mounts real tmpfs.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kcred_tests::{Stack, StackOptions, TestPod};
use tonic::Code;

const VOL: &str = "kcred";

fn assert_is_tmpfs_mount(path: &Path) {
    let st = nix::sys::statfs::statfs(path).expect("statfs");
    assert_eq!(
        st.filesystem_type(),
        nix::sys::statfs::TMPFS_MAGIC,
        "{} is not tmpfs",
        path.display()
    );
    let parent = path.parent().expect("parent");
    assert_ne!(
        std::fs::metadata(path).expect("stat").dev(),
        std::fs::metadata(parent).expect("stat parent").dev(),
        "{} is not a mount point",
        path.display()
    );
}

fn mounts_under(dir: &Path) -> usize {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let dir = dir.to_string_lossy().to_string();
    mounts
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .count()
}

#[tokio::test]
#[ignore = "needs root"]
async fn publish_delivers_a_keytab_that_kinit_accepts() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);

    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");

    assert_is_tmpfs_mount(&target);
    let keytab = target.join("krb5.keytab");
    stack
        .realm
        .kinit_keytab(&keytab, "HTTP/web.example.com")
        .expect("kinit -k -t with the delivered keytab");
    let meta = std::fs::metadata(&keytab).expect("keytab metadata");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (1500, 1500),
        "owned by the role account"
    );
    assert_eq!(meta.mode() & 0o777, 0o400, "keytab mode");
    let root = std::fs::metadata(&target).expect("mount root metadata");
    assert_eq!(
        (root.uid(), root.gid(), root.mode() & 0o777),
        (0, 1500, 0o550),
        "the pod must not own the volume root (it could tamper with ..data)"
    );
    let conf = std::fs::read_to_string(target.join("krb5.conf")).expect("krb5.conf");
    assert!(
        conf.contains(stack.realm.name()),
        "krb5.conf names the realm"
    );
    // The mount is nosuid,nodev,noexec.
    let flags = nix::sys::statvfs::statvfs(&target)
        .expect("statvfs")
        .flags();
    use nix::sys::statvfs::FsFlags;
    assert!(
        flags.contains(FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_NOEXEC),
        "{flags:?}"
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_second_pod_gets_the_same_kvno_and_the_kdc_kvno_does_not_move() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let kvno_before = stack.realm.kvno("HTTP/web.example.com").expect("kvno");
    let a = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    let b = TestPod::with_keytabs(
        "web",
        "web-1",
        "node-a",
        "HTTP/web.example.com, HTTP/api.example.com",
    );
    stack.add_pod(&a);
    stack.add_pod(&b);

    let ta = stack.kubelet.publish(&a, VOL).await.expect("publish a");
    let tb = stack.kubelet.publish(&b, VOL).await.expect("publish b");

    assert_eq!(
        stack.realm.kvno("HTTP/web.example.com").expect("kvno"),
        kvno_before,
        "KDC kvno moved"
    );
    for (target, principals) in [
        (&ta, &["HTTP/web.example.com"][..]),
        (&tb, &["HTTP/web.example.com", "HTTP/api.example.com"][..]),
    ] {
        for p in principals {
            stack
                .realm
                .kinit_keytab(&target.join("krb5.keytab"), p)
                .expect("kinit");
        }
    }
    // The first pod's keytab still works after the second extraction: keys
    // were not randomized behind its back.
    stack
        .realm
        .kinit_keytab(&ta.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("kinit a again");
    let klist = stack
        .realm
        .command("klist")
        .args(["-k"])
        .arg(tb.join("krb5.keytab"))
        .output()
        .expect("klist");
    let listing = String::from_utf8_lossy(&klist.stdout);
    assert!(
        listing.contains("HTTP/web.example.com") && listing.contains("HTTP/api.example.com"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .filter(|l| l.contains("HTTP/web.example.com"))
            .all(|l| l.trim_start().starts_with(&kvno_before.to_string())),
        "{listing}"
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn publish_twice_is_idempotent_and_unpublish_leaves_nothing() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);

    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");
    let m = stack.driver_metrics();
    assert!(
        m.contains("kcred_csi_controller_call_seconds_count{code=\"Ok\",method=\"FetchBundle\"} 1"),
        "the node's call to the controller timed: {m}"
    );
    let data_before = std::fs::read_link(target.join("..data")).expect("..data");
    let bytes_before = std::fs::read(target.join("krb5.keytab")).expect("read");
    stack.kubelet.publish(&pod, VOL).await.expect("republish");
    assert_eq!(
        std::fs::read_link(target.join("..data")).expect("..data"),
        data_before,
        "republish rewrote files"
    );
    assert_eq!(
        std::fs::read(target.join("krb5.keytab")).expect("read"),
        bytes_before
    );
    assert_eq!(mounts_under(stack.dir.path()), 1, "one mount, not two");
    assert!(
        stack
            .driver_metrics()
            .contains("kcred_csi_mounted_volumes 1"),
        "{}",
        stack.driver_metrics()
    );

    stack.kubelet.unpublish(&pod, VOL).await.expect("unpublish");
    assert!(!target.exists(), "target removed");
    assert_eq!(mounts_under(stack.dir.path()), 0, "no mount left");
    stack
        .kubelet
        .unpublish(&pod, VOL)
        .await
        .expect("unpublish of a gone volume is OK");
    let m = stack.driver_metrics();
    assert!(m.contains("kcred_csi_mounted_volumes 0"), "{m}");
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn publish_refuses_a_principal_the_role_account_does_not_own() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::with_keytabs("db", "db-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);

    let err = stack
        .kubelet
        .publish(&pod, VOL)
        .await
        .expect_err("must be refused");

    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("dbsvc") && err.message().contains("service_principals"),
        "{}",
        err.message()
    );
    assert!(
        !stack.kubelet.target_path(&pod, VOL).exists(),
        "no mount directory"
    );
    assert_eq!(mounts_under(stack.dir.path()), 0);
    let m = stack.driver_metrics();
    assert!(
        m.contains(
            "kcred_csi_errors_total{code=\"PermissionDenied\",method=\"NodePublishVolume\"} 1"
        ),
        "{m}"
    );
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn publish_refuses_a_pod_bound_to_another_node_or_with_another_uid() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let elsewhere = TestPod::with_keytabs("web", "web-0", "node-b", "HTTP/web.example.com");
    stack.add_pod(&elsewhere);
    let err = stack
        .kubelet
        .publish(&elsewhere, VOL)
        .await
        .expect_err("other node");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("node-b"), "{}", err.message());

    let mut impostor = TestPod::with_keytabs("web", "web-1", "node-a", "HTTP/web.example.com");
    stack.add_pod(&impostor);
    impostor.uid = "0000-forged".into();
    let err = stack
        .kubelet
        .publish(&impostor, VOL)
        .await
        .expect_err("uid mismatch");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let unknown = TestPod::with_keytabs("web", "ghost", "node-a", "HTTP/web.example.com");
    let err = stack
        .kubelet
        .publish(&unknown, VOL)
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(mounts_under(stack.dir.path()), 0);
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn bad_requests_get_invalid_argument_and_leave_no_mount() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);
    let good = stack.kubelet.publish_request(&pod, VOL);
    let outside = stack
        .dir
        .path()
        .join("elsewhere/mount")
        .display()
        .to_string();
    let dotdot = format!(
        "{}/pods/{}/../../../escape/mount",
        stack.kubelet_dir().display(),
        pod.uid
    );

    type Edit = Box<dyn Fn(&mut kcred_proto::csi::v1::NodePublishVolumeRequest)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "no target path",
            Box::new(|r| r.target_path.clear()),
            "target_path",
        ),
        (
            "target outside kubelet dir",
            Box::new(move |r| r.target_path = outside.clone()),
            "outside",
        ),
        (
            "dot-dot in target",
            Box::new(move |r| r.target_path = dotdot.clone()),
            "..",
        ),
        (
            "no volume id",
            Box::new(|r| r.volume_id.clear()),
            "volume_id",
        ),
        (
            "no capability",
            Box::new(|r| r.volume_capability = None),
            "volume_capability",
        ),
        (
            "no pod uid",
            Box::new(|r| {
                r.volume_context.remove("csi.storage.k8s.io/pod.uid");
            }),
            "pod.uid",
        ),
        (
            "no pod name",
            Box::new(|r| {
                r.volume_context.remove("csi.storage.k8s.io/pod.name");
            }),
            "pod.name",
        ),
        (
            "not ephemeral",
            Box::new(|r| {
                r.volume_context.remove("csi.storage.k8s.io/ephemeral");
            }),
            "ephemeral",
        ),
    ];
    for (what, edit, needle) in cases {
        let mut req = good.clone();
        edit(&mut req);
        let err = stack
            .kubelet
            .node()
            .node_publish_volume(req)
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: message {:?} lacks {needle:?}",
            err.message()
        );
    }
    let bad_annotation = TestPod::with_keytabs("web", "web-9", "node-a", "HTTP/Not A Principal");
    stack.add_pod(&bad_annotation);
    let err = stack
        .kubelet
        .publish(&bad_annotation, VOL)
        .await
        .expect_err("bad annotation");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("kcred.io/keytabs"),
        "{}",
        err.message()
    );

    assert_eq!(mounts_under(stack.dir.path()), 0, "no mount left behind");
    assert!(!stack.kubelet.target_path(&pod, VOL).exists());
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn after_a_controller_restart_pods_get_the_same_keytab_from_the_store() {
    let mut stack = Stack::start(StackOptions::default()).await.expect("stack");
    let a = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&a);
    let ta = stack.kubelet.publish(&a, VOL).await.expect("publish a");
    let first = std::fs::read(ta.join("krb5.keytab")).expect("read");

    stack.stop_controller().await.expect("stop");
    let b = TestPod::with_keytabs("web", "web-1", "node-a", "HTTP/web.example.com");
    // The restarted controller cannot reach kadmind at all (its admin
    // keytab is gone): only the store can serve the keytab.
    stack
        .start_controller(
            |cfg| cfg.kadmin.keytab = "/nonexistent/admin.keytab".into(),
            &[&a, &b],
        )
        .await
        .expect("restart");
    let tb = stack
        .kubelet
        .publish(&b, VOL)
        .await
        .expect("publish b after restart");

    assert_eq!(
        std::fs::read(tb.join("krb5.keytab")).expect("read"),
        first,
        "same keytab bytes"
    );
    stack
        .realm
        .kinit_keytab(&tb.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("kinit");
    // And a principal never extracted before fails cleanly, proving kadmind
    // really was out of reach.
    let c = TestPod::with_keytabs("web", "web-2", "node-a", "HTTP/api.example.com");
    stack.add_pod(&c);
    let err = stack
        .kubelet
        .publish(&c, VOL)
        .await
        .expect_err("kadmin unreachable");
    assert!(
        matches!(err.code(), Code::Unavailable | Code::Internal),
        "{err:?}"
    );
    assert!(!stack.kubelet.target_path(&c, VOL).exists());
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
#[ignore = "needs root"]
async fn a_refresh_while_the_controller_is_down_keeps_the_last_good_files() {
    let mut stack = Stack::start(StackOptions::default()).await.expect("stack");
    let pod = TestPod::with_keytabs("web", "web-0", "node-a", "HTTP/web.example.com");
    stack.add_pod(&pod);
    let target = stack.kubelet.publish(&pod, VOL).await.expect("publish");

    stack.stop_controller().await.expect("stop");
    stack
        .kubelet
        .publish(&pod, VOL)
        .await
        .expect("republish must answer OK");

    stack
        .realm
        .kinit_keytab(&target.join("krb5.keytab"), "HTTP/web.example.com")
        .expect("files kept");
    // A first publish, by contrast, reports the outage (retryable).
    let other = TestPod::with_keytabs("web", "web-1", "node-a", "HTTP/web.example.com");
    let err = stack
        .kubelet
        .publish(&other, VOL)
        .await
        .expect_err("controller down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!stack.kubelet.target_path(&other, VOL).exists());
    stack.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn identity_and_node_info_answer_as_the_spec_requires() {
    let stack = Stack::start(StackOptions::default()).await.expect("stack");
    let info = stack
        .kubelet
        .identity()
        .get_plugin_info(kcred_proto::csi::v1::GetPluginInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.name, "csi.kcred.io");
    assert!(!info.vendor_version.is_empty());
    let caps = stack
        .kubelet
        .identity()
        .get_plugin_capabilities(kcred_proto::csi::v1::GetPluginCapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner();
    assert!(
        caps.capabilities.is_empty(),
        "a node-only plugin has no CONTROLLER_SERVICE"
    );
    let probe = stack
        .kubelet
        .identity()
        .probe(kcred_proto::csi::v1::ProbeRequest {})
        .await
        .expect("probe")
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    let node = stack
        .kubelet
        .node()
        .node_get_info(kcred_proto::csi::v1::NodeGetInfoRequest {})
        .await
        .expect("node info")
        .into_inner();
    assert_eq!(node.node_id, "node-a");
    let err = stack
        .kubelet
        .node()
        .node_stage_volume(kcred_proto::csi::v1::NodeStageVolumeRequest::default())
        .await
        .expect_err("stage");
    assert_eq!(err.code(), Code::Unimplemented);
    stack.shutdown().await.expect("shutdown");
}
