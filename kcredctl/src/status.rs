//! `status` and `list`: what the controller knows, as tables or JSON.

use kcred_proto::kcred::v1::{IssuedVolume, ListCredentialsRequest, StatusRequest, StatusResponse};
use serde::Serialize;

use crate::cli::{Format, ListArgs};
use crate::connect::{Conn, unary};
use crate::output::{Table, or_dash, print, print_json, short_id};
use crate::timeparse::{age, format_unix};
use kcred_audit::timefmt::now_unix_ms;

/// `kcredctl status`.
pub async fn status(conn: &mut Conn, format: Format) -> anyhow::Result<()> {
    let resp = unary(conn.timeout, conn.client.status(StatusRequest {})).await?;
    let now = now_unix_ms() / 1000;
    match format {
        Format::Json => print_json(&StatusView::new(&resp, now)),
        Format::Table => print(&render_status(&resp, now)),
    }
}

/// `kcredctl list`.
pub async fn list(conn: &mut Conn, args: &ListArgs, format: Format) -> anyhow::Result<()> {
    let req = ListCredentialsRequest {
        principal: args.principal.clone().unwrap_or_default(),
        namespace: args.namespace.clone().unwrap_or_default(),
        node: args.node.clone().unwrap_or_default(),
    };
    let resp = unary(conn.timeout, conn.client.list_credentials(req)).await?;
    match format {
        Format::Json => {
            let views: Vec<VolumeView> = resp.volumes.iter().map(VolumeView::new).collect();
            print_json(&views)
        }
        Format::Table => print(&render_volumes(&resp.volumes, args.wide)),
    }
}

/// JSON shape of `status`.
#[derive(Serialize, Debug)]
pub struct StatusView {
    caller: String,
    role: String,
    nodes: Vec<NodeView>,
    gate: Vec<GateView>,
    store: StoreView,
    audit_records: u64,
}

#[derive(Serialize, Debug)]
struct NodeView {
    name: String,
    state: String,
    last_heartbeat_unix: i64,
    last_heartbeat_age_secs: Option<i64>,
    volumes: u32,
}

#[derive(Serialize, Debug)]
struct GateView {
    lane: String,
    breaker: &'static str,
    queued: u32,
    budget_remaining: u32,
}

#[derive(Serialize, Debug)]
struct StoreView {
    keytabs: u64,
    tickets: u64,
    certs: u64,
    key_rings: u64,
    volumes: u64,
}

impl StatusView {
    fn new(r: &StatusResponse, now: i64) -> Self {
        StatusView {
            caller: r.caller.clone(),
            role: r.role.clone(),
            nodes: r
                .nodes
                .iter()
                .map(|n| NodeView {
                    name: n.name.clone(),
                    state: n.state.clone(),
                    last_heartbeat_unix: n.last_heartbeat_unix,
                    last_heartbeat_age_secs: (n.last_heartbeat_unix > 0)
                        .then(|| now - n.last_heartbeat_unix),
                    volumes: n.volumes,
                })
                .collect(),
            gate: r
                .gate
                .iter()
                .map(|g| GateView {
                    lane: g.lane.clone(),
                    breaker: breaker(g.breaker_open),
                    queued: g.queued,
                    budget_remaining: g.budget_remaining,
                })
                .collect(),
            store: StoreView {
                keytabs: r.keytabs,
                tickets: r.tickets,
                certs: r.certs,
                key_rings: r.key_rings,
                volumes: r.volumes,
            },
            audit_records: r.audit_records,
        }
    }
}

fn breaker(open: bool) -> &'static str {
    if open { "open" } else { "closed" }
}

/// The `status` table: identity, nodes, gate lanes, counts.
pub fn render_status(r: &StatusResponse, now: i64) -> String {
    let mut out = format!("you are {} ({})\n\n", or_dash(&r.caller), or_dash(&r.role));
    if r.nodes.is_empty() {
        out.push_str("no node has sent a heartbeat yet\n");
    } else {
        let mut t = Table::new(&["NODE", "STATE", "LAST HEARTBEAT", "VOLUMES"]);
        for n in &r.nodes {
            let beat = age(now, n.last_heartbeat_unix);
            t.row(vec![
                n.name.clone(),
                n.state.clone(),
                beat,
                n.volumes.to_string(),
            ]);
        }
        out.push_str(&t.render());
    }
    out.push('\n');
    let mut t = Table::new(&["KDC LANE", "BREAKER", "QUEUED", "BUDGET LEFT"]);
    for g in &r.gate {
        t.row(vec![
            g.lane.clone(),
            breaker(g.breaker_open).into(),
            g.queued.to_string(),
            g.budget_remaining.to_string(),
        ]);
    }
    if !t.is_empty() {
        out.push_str(&t.render());
        out.push('\n');
    }
    out.push_str(&format!(
        "store: {} keytabs, {} tickets, {} certs, {} key rings, {} volumes\n\
         audit: {} records\n",
        r.keytabs, r.tickets, r.certs, r.key_rings, r.volumes, r.audit_records
    ));
    out
}

/// JSON shape of one `list` entry.
#[derive(Serialize, Debug)]
pub struct VolumeView {
    volume_id: String,
    node: String,
    namespace: String,
    pod: String,
    keytabs: Vec<Versioned>,
    ticket: Option<String>,
    certs: Vec<String>,
    keys: Vec<Versioned>,
    issued_unix: i64,
    issued: String,
    generation: String,
    revoked: bool,
}

/// A principal with its kvno, or a key id with its primary version.
#[derive(Serialize, Debug)]
struct Versioned {
    name: String,
    version: Option<u32>,
}

impl VolumeView {
    fn new(v: &IssuedVolume) -> Self {
        let versioned = |names: &[String]| {
            names
                .iter()
                .map(|n| Versioned {
                    name: n.clone(),
                    version: v.versions.get(n).copied(),
                })
                .collect()
        };
        VolumeView {
            volume_id: v.volume_id.clone(),
            node: v.node.clone(),
            namespace: v.namespace.clone(),
            pod: v.pod.clone(),
            keytabs: versioned(&v.keytabs),
            ticket: (!v.ticket.is_empty()).then(|| v.ticket.clone()),
            certs: v.certs.clone(),
            keys: versioned(&v.keys),
            issued_unix: v.issued_unix,
            issued: format_unix(v.issued_unix),
            generation: v.generation.clone(),
            revoked: v.revoked,
        }
    }
}

/// "keytab HTTP/web@R kvno 3; ticket u@R; cert web.svc; key db v2".
fn holdings(v: &IssuedVolume) -> String {
    let with = |name: &str, tag: &str| match v.versions.get(name) {
        Some(n) => format!("{name} {tag}{n}"),
        None => name.to_string(),
    };
    let mut parts: Vec<String> = v
        .keytabs
        .iter()
        .map(|p| format!("keytab {}", with(p, "kvno ")))
        .collect();
    if !v.ticket.is_empty() {
        parts.push(format!("ticket {}", v.ticket));
    }
    parts.extend(v.certs.iter().map(|c| format!("cert {c}")));
    parts.extend(v.keys.iter().map(|k| format!("key {}", with(k, "v"))));
    parts.join("; ")
}

/// The `list` table, one row per volume.
pub fn render_volumes(volumes: &[IssuedVolume], wide: bool) -> String {
    if volumes.is_empty() {
        return "no issued credentials match\n".into();
    }
    let mut t = Table::new(&["VOLUME", "NODE", "POD", "HOLDS", "ISSUED", "REVOKED"]);
    for v in volumes {
        t.row(vec![
            if wide {
                v.volume_id.clone()
            } else {
                short_id(&v.volume_id)
            },
            v.node.clone(),
            format!("{}/{}", v.namespace, v.pod),
            holdings(v),
            format_unix(v.issued_unix),
            if v.revoked { "yes" } else { "no" }.into(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use kcred_proto::kcred::v1::{GateStatus, NodeStatus};
    use serde_json::json;

    use super::*;

    fn status_response() -> StatusResponse {
        StatusResponse {
            nodes: vec![
                NodeStatus {
                    name: "node-a".into(),
                    state: "alive".into(),
                    last_heartbeat_unix: 1_000_000 - 12,
                    volumes: 3,
                },
                NodeStatus {
                    name: "node-bb".into(),
                    state: "lost".into(),
                    last_heartbeat_unix: 1_000_000 - 600,
                    volumes: 0,
                },
            ],
            gate: vec![GateStatus {
                lane: "issue".into(),
                breaker_open: true,
                queued: 4,
                budget_remaining: 17,
            }],
            keytabs: 4,
            tickets: 2,
            certs: 3,
            key_rings: 1,
            volumes: 6,
            audit_records: 120,
            caller: "alice@EXAMPLE.COM".into(),
            role: "operator".into(),
        }
    }

    fn volume() -> IssuedVolume {
        IssuedVolume {
            volume_id: "csi-0123456789abcdef0123".into(),
            node: "node-a".into(),
            namespace: "prod".into(),
            pod: "web-0".into(),
            keytabs: vec!["HTTP/web@R".into()],
            ticket: "web@R".into(),
            certs: vec!["web.prod.svc".into()],
            keys: vec!["orders".into()],
            issued_unix: 1_777_636_800,
            generation: "g1".into(),
            revoked: false,
            versions: [("HTTP/web@R".to_string(), 3), ("orders".to_string(), 2)].into(),
        }
    }

    #[test]
    fn status_table_shows_identity_nodes_gate_and_counts() {
        let text = render_status(&status_response(), 1_000_000);
        assert_eq!(
            text,
            "you are alice@EXAMPLE.COM (operator)\n\n\
             NODE     STATE  LAST HEARTBEAT  VOLUMES\n\
             node-a   alive  12s ago         3\n\
             node-bb  lost   10m ago         0\n\n\
             KDC LANE  BREAKER  QUEUED  BUDGET LEFT\n\
             issue     open     4       17\n\n\
             store: 4 keytabs, 2 tickets, 3 certs, 1 key rings, 6 volumes\n\
             audit: 120 records\n"
        );
    }

    #[test]
    fn status_json_has_a_stable_shape() {
        let value = serde_json::to_value(StatusView::new(&status_response(), 1_000_000));
        let value = value.expect("encodes");
        assert_eq!(value["caller"], "alice@EXAMPLE.COM");
        assert_eq!(value["role"], "operator");
        assert_eq!(
            value["nodes"][0],
            json!({"name": "node-a", "state": "alive", "last_heartbeat_unix": 999_988,
                   "last_heartbeat_age_secs": 12, "volumes": 3})
        );
        assert_eq!(
            value["gate"][0],
            json!({"lane": "issue", "breaker": "open", "queued": 4, "budget_remaining": 17})
        );
        assert_eq!(
            value["store"],
            json!({"keytabs": 4, "tickets": 2, "certs": 3, "key_rings": 1, "volumes": 6})
        );
        assert_eq!(value["audit_records"], 120);
    }

    #[test]
    fn list_table_shortens_ids_unless_wide_and_names_versions() {
        let text = render_volumes(&[volume()], false);
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        assert!(
            header.starts_with("VOLUME         NODE    POD         HOLDS"),
            "{header}"
        );
        let row = lines.next().expect("row");
        assert!(row.starts_with("csi-01234567…  node-a  prod/web-0  keytab HTTP/web@R kvno 3; "));
        assert!(row.contains(
            "; ticket web@R; cert web.prod.svc; key orders v2  2026-05-01T12:00:00Z  no"
        ));
        assert!(render_volumes(&[volume()], true).contains("csi-0123456789abcdef0123  node-a"));
        assert_eq!(render_volumes(&[], false), "no issued credentials match\n");
    }

    #[test]
    fn list_json_has_a_stable_shape() {
        let value = serde_json::to_value(VolumeView::new(&volume())).expect("encodes");
        assert_eq!(
            value,
            json!({
                "volume_id": "csi-0123456789abcdef0123", "node": "node-a",
                "namespace": "prod", "pod": "web-0",
                "keytabs": [{"name": "HTTP/web@R", "version": 3}],
                "ticket": "web@R", "certs": ["web.prod.svc"],
                "keys": [{"name": "orders", "version": 2}],
                "issued_unix": 1_777_636_800, "issued": "2026-05-01T12:00:00Z",
                "generation": "g1", "revoked": false
            })
        );
    }
}
