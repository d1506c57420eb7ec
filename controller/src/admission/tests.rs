//! Every admission rule, refusing and granting, without root or servers.

use std::collections::{BTreeMap, BTreeSet};

use kcred_proto::kcred::v1::{PodRef, Reason};

use super::*;
use crate::names::ServicePrincipal;
use crate::pods::ContainerIdentity;
use crate::policy::RoleAccount;

const REALM: &str = "KCRED.TEST";

fn policy() -> Policy {
    Policy::new(vec![RoleAccount {
        login: "websvc".into(),
        realm: None,
        uid: 1500,
        gid: 1500,
        groups: vec![],
        namespaces: BTreeSet::from(["web".to_string()]),
        service_principals: BTreeSet::from([
            "HTTP/web.example.com@KCRED.TEST".to_string(),
            "host/node-b.example.com@KCRED.TEST".to_string(),
            "kcred/evil.example.com@KCRED.TEST".to_string(),
        ]),
        certificates: BTreeSet::from([
            "web.example.com".to_string(),
            "kcred.example.com".to_string(),
        ]),
        keys: BTreeSet::from(["orders-db".to_string()]),
        supplemental_gids: BTreeSet::from([3000]),
        service_accounts: BTreeSet::new(),
        logged_into_by: BTreeSet::new(),
    }])
    .expect("valid policy")
}

fn pod(annotations: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: "web".into(),
        name: "web-0".into(),
        uid: "uid-1".into(),
        node_name: "node-a".into(),
        service_account: "default".into(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        fs_group: None,
        run_as_user: Some(1500),
        run_as_group: Some(1500),
        containers: vec![ContainerIdentity {
            name: "app".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn pod_ref() -> PodRef {
    PodRef {
        namespace: "web".into(),
        name: "web-0".into(),
        uid: "uid-1".into(),
        service_account: "default".into(),
    }
}

fn record(node: &str, uid: &str, revoked: bool) -> VolumeRecord {
    VolumeRecord {
        volume_id: "vol-1".into(),
        node: node.into(),
        namespace: "web".into(),
        pod: "web-0".into(),
        pod_uid: uid.into(),
        keytabs: BTreeSet::new(),
        ticket: None,
        certs: BTreeSet::new(),
        keys: BTreeSet::new(),
        versions: BTreeMap::new(),
        issued_unix: 0,
        generation: String::new(),
        revoked,
    }
}

/// Facts for a pod asking for one keytab; each test changes one fact.
struct Case {
    pod: Option<PodInfo>,
    pod_ref: PodRef,
    node: &'static str,
    refresh: bool,
    lease: Option<LeaseState>,
    volume: Option<VolumeRecord>,
    pod_revoked: bool,
    pods_behind: bool,
    reserved: Reserved,
    nodes: Vec<&'static str>,
    policy: Policy,
    pod_token: Option<TokenVerdict>,
    volume_id: String,
}

impl Case {
    fn new() -> Self {
        Case {
            pod: Some(pod(&[("kcred.io/keytabs", "HTTP/web.example.com")])),
            pod_ref: pod_ref(),
            node: "node-a",
            refresh: false,
            lease: None,
            volume: None,
            pod_revoked: false,
            pods_behind: false,
            reserved: Reserved {
                principals: BTreeSet::from(["kcredadmin/admin@KCRED.TEST".to_string()]),
                tls_names: BTreeSet::from(["kcred.example.com".to_string()]),
                host_patterns: vec!["*.nodes.example.com".to_string()],
                short_node_names: true,
            },
            nodes: vec!["node-a", "node-b"],
            policy: policy(),
            pod_token: None,
            volume_id: "vol-1".into(),
        }
    }

    fn annotate(mut self, key: &str, value: &str) -> Self {
        self.pod = Some(pod(&[(key, value)]));
        self
    }

    fn decide(&self) -> Result<Grant, Refusal> {
        let is_node = |h: &str| self.nodes.contains(&h);
        fetch(&FetchFacts {
            node: self.node,
            pod_ref: &self.pod_ref,
            volume_id: &self.volume_id,
            refresh: self.refresh,
            pod: self.pod.as_ref(),
            realm: &REALM,
            policy: &self.policy,
            reserved: &self.reserved,
            is_node: &is_node,
            lease: self.lease,
            volume: self.volume.as_ref(),
            pod_revoked: self.pod_revoked,
            pods_behind: self.pods_behind,
            pod_token: self.pod_token.as_ref(),
        })
    }

    fn refused(&self) -> Reason {
        match self.decide() {
            Ok(g) => panic!("granted: {g:?}"),
            Err(r) => r.reason,
        }
    }
}

#[test]
fn grants_a_pod_its_owned_principal_as_its_role_account() {
    let g = Case::new().decide().expect("granted");
    assert_eq!(g.role.login, "websvc");
    assert_eq!(g.priority, Priority::Starting);
    assert_eq!(g.wants.keytabs.len(), 1);
}

#[test]
fn a_grant_shares_the_policys_role_account_rather_than_copying_it() {
    // Every fetch is granted, and an account may own thousands of
    // principals: a copy per grant cost more than the rest of admission.
    let c = Case::new();
    let first = c.decide().expect("granted");
    let second = c.decide().expect("granted");
    let in_policy = c.policy.role_for_namespace("web").expect("role");
    assert!(Arc::ptr_eq(&first.role, in_policy));
    assert!(Arc::ptr_eq(&second.role, in_policy));
}

#[test]
fn a_refresh_yields_to_starting_pods() {
    let mut c = Case::new();
    c.refresh = true;
    c.lease = Some(LeaseState::Alive);
    assert_eq!(c.decide().expect("granted").priority, Priority::Background);
}

#[test]
fn refuses_a_pod_the_controller_does_not_know() {
    let mut c = Case::new();
    c.pod = None;
    assert_eq!(c.refused(), Reason::PodUnknown);
}

#[test]
fn an_unknown_pod_is_a_retry_while_the_view_is_behind_and_a_known_one_is_served() {
    let mut c = Case::new();
    c.pods_behind = true;
    assert!(c.decide().is_ok(), "a known pod is served from the view");
    c.pod = None;
    assert_eq!(c.refused(), Reason::PodViewBehind);
    assert!(Reason::PodViewBehind.is_transient());
}

#[test]
fn refuses_a_request_naming_another_uid() {
    let mut c = Case::new();
    c.pod_ref.uid = "uid-old".into();
    assert_eq!(c.refused(), Reason::PodUidMismatch);
}

#[test]
fn refuses_a_pod_bound_to_another_node() {
    let mut c = Case::new();
    c.node = "node-b";
    assert_eq!(c.refused(), Reason::PodNotOnNode);
}

#[test]
fn a_refusal_never_tells_a_node_the_pods_uid() {
    let mut c = Case::new();
    c.node = "node-b";
    c.pod_ref.uid = "a-guess".into();
    let refusal = c.decide().unwrap_err();
    assert_eq!(refusal.reason, Reason::PodUidMismatch);
    assert!(!refusal.message.contains("uid-1"), "{}", refusal.message);
}

#[test]
fn a_volume_id_must_be_one_kubelet_derives_for_the_pod_where_its_volumes_are_known() {
    let mut c = Case::new().with_pod(|p| p.csi_volumes = Some(vec!["kcred".into(), "more".into()]));
    for name in ["kcred", "more"] {
        c.volume_id = kcred_proto::inline_volume_id("uid-1", name);
        assert!(c.decide().is_ok(), "{name}");
    }
    for other in [
        "vol-1".to_string(),
        // Another pod's volume of the same name, and a name the pod lacks.
        kcred_proto::inline_volume_id("uid-2", "kcred"),
        kcred_proto::inline_volume_id("uid-1", "other"),
    ] {
        c.volume_id = other.clone();
        let refusal = c.decide().unwrap_err();
        assert_eq!(refusal.reason, Reason::VolumeConflict, "{other}");
        assert!(refusal.message.contains(&other), "{}", refusal.message);
    }
    // A pod with no CSI volume gets nothing; one whose volumes are not
    // known (a pods file that does not list them) is not checked.
    let mut c = c.with_pod(|p| p.csi_volumes = Some(vec![]));
    c.volume_id = kcred_proto::inline_volume_id("uid-1", "kcred");
    assert_eq!(c.refused(), Reason::VolumeConflict);
    let mut c = c.with_pod(|p| p.csi_volumes = None);
    c.volume_id = "vol-1".into();
    assert!(c.decide().is_ok());
}

#[test]
fn refuses_a_pod_without_annotations() {
    let mut c = Case::new();
    c.pod = Some(pod(&[]));
    assert_eq!(c.refused(), Reason::AnnotationsMissing);
}

#[test]
fn refuses_a_malformed_annotation() {
    let c = Case::new().annotate("kcred.io/keytabs", "HTTP/web.example.com@OTHER.REALM");
    assert_eq!(c.refused(), Reason::AnnotationInvalid);
}

#[test]
fn refuses_kdc_and_kcred_identities_whatever_the_policy_grants() {
    let c = Case::new().annotate("kcred.io/keytabs", "kcred/evil.example.com");
    assert_eq!(c.refused(), Reason::ReservedIdentity);
}

#[test]
fn refuses_a_known_nodes_host_key_even_when_granted() {
    let c = Case::new().annotate("kcred.io/keytabs", "host/node-b.example.com");
    assert_eq!(c.refused(), Reason::ReservedIdentity);
}

#[test]
fn with_full_node_names_the_whole_host_is_compared() {
    let mut c = Case::new();
    c.reserved.short_node_names = false;
    c.nodes = vec!["node-b.example.com"];
    let granted = |c: &Case, p: &str| {
        c.reserved
            .check_principal(&ServicePrincipal::parse(p, REALM).expect("valid"), &|h| {
                c.nodes.contains(&h)
            })
            .map_err(|r| r.reason)
    };
    assert_eq!(
        granted(&c, "host/node-b.example.com"),
        Err(Reason::ReservedIdentity)
    );
    // node-b.other.com would authenticate as node "node-b.other.com": not a node.
    assert_eq!(granted(&c, "host/node-b.other.com"), Ok(()));
    c.reserved.short_node_names = true;
    c.nodes = vec!["node-b"];
    // With short names it would authenticate as node "node-b".
    assert_eq!(
        granted(&c, "host/node-b.other.com"),
        Err(Reason::ReservedIdentity)
    );
}

#[test]
fn refuses_a_host_key_matching_a_node_pattern_before_the_node_is_seen() {
    let c = Case::new().annotate("kcred.io/keytabs", "host/n42.nodes.example.com");
    assert_eq!(c.refused(), Reason::ReservedIdentity);
}

#[test]
fn node_patterns_match_with_stars_only_where_written() {
    use crate::admission::reserved::glob_match;
    assert!(glob_match("*.nodes.example.com", "a.nodes.example.com"));
    assert!(glob_match("*.nodes.example.com", "a.b.NODES.example.com"));
    assert!(!glob_match("*.nodes.example.com", "nodes.example.com"));
    assert!(!glob_match(
        "*.nodes.example.com",
        "a.nodes.example.com.evil"
    ));
    assert!(glob_match("node-*", "node-7"));
    assert!(!glob_match("node-*", "xnode-7"));
}

#[test]
fn refuses_the_controllers_own_principals() {
    let r = Case::new().reserved.check_principal(
        &ServicePrincipal::parse("kcredadmin/admin", REALM).expect("valid"),
        &|_| false,
    );
    assert_eq!(r.map_err(|r| r.reason), Err(Reason::ReservedIdentity));
}

#[test]
fn refuses_the_controllers_tls_name_as_a_certificate() {
    let c = Case::new().annotate("kcred.io/certs", "kcred.example.com");
    assert_eq!(c.refused(), Reason::ReservedName);
}

#[test]
fn refuses_a_namespace_without_role_account() {
    let mut c = Case::new();
    let mut p = pod(&[("kcred.io/keys", "orders-db")]);
    p.namespace = "other".into();
    c.pod = Some(p);
    c.pod_ref.namespace = "other".into();
    assert_eq!(c.refused(), Reason::NoRoleAccount);
}

#[test]
fn refuses_a_principal_the_role_account_does_not_own() {
    let c = Case::new().annotate("kcred.io/keytabs", "HTTP/api.example.com");
    assert_eq!(c.refused(), Reason::PrincipalNotOwned);
}

#[test]
fn refuses_another_role_accounts_ticket() {
    let c = Case::new().annotate("kcred.io/tickets", "dbsvc");
    assert_eq!(c.refused(), Reason::TicketNotRoleAccount);
}

#[test]
fn refuses_a_certificate_name_not_granted() {
    let c = Case::new().annotate("kcred.io/certs", "api.example.com");
    assert_eq!(c.refused(), Reason::CertificateNotGranted);
}

#[test]
fn refuses_a_key_not_granted() {
    let c = Case::new().annotate("kcred.io/keys", "payroll");
    assert_eq!(c.refused(), Reason::KeyNotGranted);
}

#[test]
fn refuses_a_volume_id_of_another_pod() {
    let mut c = Case::new();
    c.volume = Some(record("node-a", "uid-other", false));
    assert_eq!(c.refused(), Reason::VolumeConflict);
}

#[test]
fn refuses_a_volume_id_recorded_on_another_node() {
    let mut c = Case::new();
    c.volume = Some(record("node-b", "uid-1", false));
    assert_eq!(c.refused(), Reason::VolumeConflict);
}

#[test]
fn refuses_a_revoked_volume() {
    let mut c = Case::new();
    c.volume = Some(record("node-a", "uid-1", true));
    assert_eq!(c.refused(), Reason::VolumeRevoked);
}

#[test]
fn refuses_another_volume_of_a_revoked_pod() {
    let mut c = Case::new();
    c.pod_revoked = true;
    assert_eq!(c.refused(), Reason::VolumeRevoked);
}

#[test]
fn refuses_renewals_to_a_lost_node_but_not_its_first_publish() {
    let mut c = Case::new();
    c.lease = Some(LeaseState::Lost);
    c.refresh = true;
    assert_eq!(c.refused(), Reason::NodeLost);
    c.refresh = false;
    assert!(c.decide().is_ok());
}

impl Case {
    fn with_pod(mut self, change: impl FnOnce(&mut PodInfo)) -> Self {
        if let Some(p) = self.pod.as_mut() {
            change(p);
        }
        self
    }
}

#[test]
fn refuses_a_finished_pod() {
    let c = Case::new().with_pod(|p| p.finished = true);
    assert_eq!(c.refused(), Reason::PodFinished);
}

#[test]
fn refuses_a_pod_running_as_another_uid() {
    let c = Case::new().with_pod(|p| p.run_as_user = Some(0));
    assert_eq!(c.refused(), Reason::RunAsMismatch);
}

#[test]
fn refuses_a_pod_that_leaves_its_uid_to_the_image() {
    let c = Case::new().with_pod(|p| p.run_as_user = None);
    assert_eq!(c.refused(), Reason::RunAsMismatch);
}

#[test]
fn refuses_a_container_overriding_the_pods_uid_or_gid() {
    let c = Case::new().with_pod(|p| {
        p.containers.push(ContainerIdentity {
            name: "debug".into(),
            run_as_user: Some(0),
            run_as_group: None,
        })
    });
    assert_eq!(c.refused(), Reason::RunAsMismatch);
    let c = Case::new().with_pod(|p| {
        p.containers.push(ContainerIdentity {
            name: "init".into(),
            run_as_user: None,
            run_as_group: Some(1600),
        })
    });
    assert_eq!(c.refused(), Reason::RunAsMismatch);
}

#[test]
fn a_container_may_set_the_role_accounts_ids_itself() {
    let c = Case::new().with_pod(|p| {
        p.run_as_user = None;
        p.run_as_group = None;
        p.containers = vec![ContainerIdentity {
            name: "app".into(),
            run_as_user: Some(1500),
            run_as_group: Some(1500),
        }];
    });
    assert!(c.decide().is_ok());
}

#[test]
fn fs_group_and_supplemental_groups_must_be_the_role_accounts() {
    assert!(
        Case::new()
            .with_pod(|p| p.fs_group = Some(3000))
            .decide()
            .is_ok()
    );
    let c = Case::new().with_pod(|p| p.fs_group = Some(4000));
    assert_eq!(c.refused(), Reason::RunAsMismatch);
    let c = Case::new().with_pod(|p| p.supplemental_groups = vec![1500, 0]);
    assert_eq!(c.refused(), Reason::RunAsMismatch);
}

#[test]
fn policy_may_restrict_credentials_to_named_service_accounts() {
    let mut c = Case::new();
    let mut role = c
        .policy
        .role_for_namespace("web")
        .expect("role")
        .as_ref()
        .clone();
    role.service_accounts = BTreeSet::from(["web-server".to_string()]);
    c.policy = Policy::new(vec![role]).expect("policy");
    assert_eq!(c.refused(), Reason::ServiceAccountNotAllowed);
    let c = c.with_pod(|p| p.service_account = "web-server".into());
    assert!(c.decide().is_ok());
}

fn bound(namespace: &str, name: &str, uid: &str) -> TokenVerdict {
    TokenVerdict::Reviewed(crate::kubernetes::token_review::BoundIdentity {
        namespace: namespace.into(),
        service_account: "default".into(),
        pod_name: name.into(),
        pod_uid: uid.into(),
        node_name: None,
    })
}

#[test]
fn a_required_pod_token_naming_the_requests_pod_lets_the_other_rules_decide() {
    let mut c = Case::new();
    c.pod_token = Some(bound("web", "web-0", "uid-1"));
    assert!(c.decide().is_ok());
    // The token only vouches for the pod: the pod's own rules still hold.
    c.pod = None;
    assert_eq!(c.refused(), Reason::PodUnknown);
}

#[test]
fn a_required_pod_token_that_is_missing_or_invalid_is_refused_first() {
    let mut c = Case::new();
    c.pod_token = Some(TokenVerdict::Missing);
    assert_eq!(c.refused(), Reason::PodTokenMissing);
    c.pod_token = Some(TokenVerdict::Rejected("token has expired".into()));
    let refusal = c.decide().unwrap_err();
    assert_eq!(refusal.reason, Reason::PodTokenInvalid);
    assert!(
        refusal.message.contains("token has expired"),
        "{}",
        refusal.message
    );
    // Before anything else: the pod need not even be known.
    c.pod = None;
    assert_eq!(c.refused(), Reason::PodTokenInvalid);
}

#[test]
fn a_pod_token_of_another_pod_is_refused_whatever_differs() {
    for other in [
        bound("web", "web-1", "uid-1"),
        bound("web", "web-0", "uid-2"),
        bound("db", "web-0", "uid-1"),
    ] {
        let mut c = Case::new();
        c.pod_token = Some(other.clone());
        assert_eq!(c.refused(), Reason::PodTokenMismatch, "{other:?}");
    }
}

#[test]
fn an_unreviewable_token_holds_back_first_issues_but_not_renewals_of_this_pods_volume() {
    let mut c = Case::new();
    c.pod_token = Some(TokenVerdict::Unverifiable("API server down".into()));
    assert_eq!(c.refused(), Reason::KubeApiUnavailable);
    assert!(Reason::KubeApiUnavailable.is_transient(), "kubelet retries");
    c.refresh = true;
    c.lease = Some(LeaseState::Alive);
    assert_eq!(
        c.refused(),
        Reason::KubeApiUnavailable,
        "no record: a first issue"
    );
    c.volume = Some(record("node-a", "uid-1", false));
    assert!(
        c.decide().is_ok(),
        "a renewal of this pod's volume on this node"
    );
    c.volume = Some(record("node-b", "uid-1", false));
    assert_ne!(c.decide().map(|_| ()), Ok(()), "issued on another node");
}
