//! The command line: every command, option and its help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kcred_audit::Action;

use crate::timeparse::{parse_duration, parse_time_arg};

/// kcredctl: operate and audit a kcred controller.
///
/// kcred delivers Kerberos keytabs, tickets, certificates and keys to
/// Kubernetes pods. kcredctl talks to the controller's Admin API to show
/// what was issued, rotate keys, revoke volumes and export or verify the
/// signed audit log.
///
/// Every call is authenticated with your Kerberos identity, as MIT's own
/// tools do it: the tickets you got with `kinit` (the default credential
/// cache, or KRB5CCNAME), or a keytab only if you pass --keytab (with
/// --principal), or, for certificate admins, a client certificate
/// (--tls-cert and --tls-key, https only). The KDC is found through the
/// usual Kerberos configuration (KRB5_CONFIG, else /etc/krb5.conf). The
/// controller maps your principal (or `cert:<CN>`) to a role: auditors may
/// read (status, list, audit), operators may also change (rotate, revoke).
///
/// Exit codes: 0 success, 1 failure or a verification problem, 2 usage
/// error.
#[derive(Parser, Debug)]
#[command(name = "kcredctl", version, propagate_version = true)]
#[command(after_long_help = "Example:\n  \
    export KCRED_CONTROLLER=http://kcred.example.com:7420\n  \
    kinit alice@EXAMPLE.COM\n  \
    kcredctl status")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the controller is, who you are, and how to print.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The controller's Admin API, e.g. http://127.0.0.1:7420; several
    /// separated by commas: the first that answers is used.
    #[arg(long, env = "KCRED_CONTROLLER", value_name = "URL", global = true)]
    pub controller: Option<String>,
    /// Keytab holding your Kerberos key, for scripts; without it your
    /// `kinit` tickets are used.
    #[arg(long, env = "KCRED_KEYTAB", value_name = "PATH", global = true)]
    pub keytab: Option<PathBuf>,
    /// Your Kerberos principal, e.g. alice@EXAMPLE.COM: required with
    /// --keytab; without it, picks your tickets from the cache collection
    /// [default: the default cache's principal]. Give it before the
    /// command: after `list`, --principal is a filter.
    #[arg(long, env = "KCRED_PRINCIPAL", value_name = "NAME")]
    pub principal: Option<String>,
    /// The controller's Kerberos service principal [default: kcred/<controller host>].
    #[arg(long, env = "KCRED_SERVICE", value_name = "NAME", global = true)]
    pub service: Option<String>,
    /// The controller's CA certificate (PEM, the file the controller
    /// exports as tls.ca_export_file): required for an https:// controller.
    #[arg(long, env = "KCRED_CA_CERT", value_name = "PATH", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Your client certificate (PEM), for certificate admins (`cert:<CN>`
    /// in auth.operators or auth.auditors); replaces Kerberos.
    #[arg(
        long,
        env = "KCRED_TLS_CERT",
        value_name = "PATH",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "KCRED_TLS_KEY",
        value_name = "PATH",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name in the controller's certificate, if not the URL's host.
    #[arg(
        long,
        env = "KCRED_TLS_SERVER_NAME",
        value_name = "NAME",
        global = true
    )]
    pub tls_server_name: Option<String>,
    /// Output format: an aligned table for people, JSON for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
    /// Longest wait for connecting and for each answer (seconds, or 30s, 2m...).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON (a document, or JSON lines for streams).
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Shows nodes, the KDC gate, store counts and who you are.
    ///
    /// Nodes with their heartbeat and volume count, the KDC gate per lane
    /// (circuit breaker, queue, request budget), how many credentials the
    /// store holds, the number of audit records, and the identity and role
    /// the controller authenticated you as.
    ///
    /// Who: auditors and operators.
    #[command(after_long_help = "Example:\n  kcredctl status\n  kcredctl status --output json")]
    Status,
    /// Lists issued credentials, one row per volume.
    ///
    /// For each volume: its id (shortened in tables; --wide for the full id
    /// that `revoke` needs), node, namespace/pod, what it holds (keytabs
    /// with kvno, ticket, certificates, keys with version), when it was
    /// issued and whether it is revoked. Filters combine (all must match).
    ///
    /// Who: auditors and operators.
    #[command(after_long_help = "Example:\n  \
        kcredctl list --principal HTTP/web.prod.svc@EXAMPLE.COM\n  \
        kcredctl list --namespace prod --node node-a --wide")]
    List(ListArgs),
    /// Rotates a keytab principal or a key ring, and follows the rollout.
    #[command(subcommand)]
    Rotate(RotateCmd),
    /// Retires an old version of a key ring.
    ///
    /// The version is no longer delivered: volumes holding the ring get the
    /// file without it at once, and data encrypted with it can no longer be
    /// read by pods. The primary version cannot be retired (rotate first).
    ///
    /// Who: operators.
    #[command(after_long_help = "Example:
  kcredctl retire orders-db 1")]
    Retire {
        /// The key ring's id.
        id: String,
        /// The version to retire.
        #[arg(value_name = "VERSION")]
        key_version: u32,
    },
    /// Revokes a volume's credentials, and so its pod's.
    ///
    /// The controller gives the pod nothing more (under any volume id) and
    /// the node wipes the files of the volume and of the pod's other
    /// volumes. Each volume's revocation is written to the audit log with
    /// the reason.
    ///
    /// Who: operators.
    #[command(after_long_help = "Example:\n  \
        kcredctl revoke csi-3f2a9c0d1e2b4a5c --reason \"pod compromised, INC-4711\"")]
    Revoke(RevokeArgs),
    /// Queries, exports and verifies the signed audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Prints shell completions.
    ///
    /// Who: anyone; does not contact the controller.
    #[command(after_long_help = "Example:\n  \
        kcredctl completions bash > /etc/bash_completion.d/kcredctl\n  \
        kcredctl completions zsh > \"${fpath[1]}/_kcredctl\"\n  \
        kcredctl completions fish > ~/.config/fish/completions/kcredctl.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Shells completions are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only volumes holding a keytab of this service principal.
    #[arg(long = "principal", id = "holder", value_name = "P")]
    pub principal: Option<String>,
    /// Only volumes of pods in this namespace.
    #[arg(long, value_name = "N")]
    pub namespace: Option<String>,
    /// Only volumes on this node.
    #[arg(long, value_name = "X")]
    pub node: Option<String>,
    /// Show full volume ids in the table.
    #[arg(long)]
    pub wide: bool,
}

#[derive(Subcommand, Debug)]
pub enum RotateCmd {
    /// Gives a service principal new keys and follows the rollout.
    ///
    /// The KDC makes a new kvno; the command waits for the volumes holding
    /// the principal to receive it. Keytabs keep the previous kvno for the
    /// grace period, so tickets issued before the rotation stay valid; then
    /// it is purged. Progress is printed as "N of M volumes updated". Exits 1 if not every volume
    /// has the new kvno when the wait ends (nodes still pick it up later);
    /// with --wait 0 it only starts the rotation.
    ///
    /// Who: operators.
    #[command(after_long_help = "Example:\n  \
        kcredctl rotate keytab HTTP/web.prod.svc@EXAMPLE.COM --grace 1h --wait 5m")]
    Keytab {
        /// The service principal, e.g. HTTP/web.prod.svc@EXAMPLE.COM.
        #[arg(id = "target", value_name = "PRINCIPAL")]
        principal: String,
        /// How long keytabs keep the previous kvno (30s, 5m, 1h, 2d).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        grace: Duration,
        /// How long to wait for nodes to pick up the new kvno (0: do not wait).
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
        wait: Duration,
    },
    /// Makes a new primary version of a key ring and follows the rollout.
    ///
    /// The command waits for the volumes holding the ring to receive it. Older versions stay in the ring so data encrypted with them can
    /// still be read. Exits 1 if not every volume has the new version when
    /// the wait ends; with --wait 0 it only starts the rotation.
    ///
    /// Who: operators.
    #[command(after_long_help = "Example:\n  kcredctl rotate key orders-db --wait 2m")]
    Key {
        /// The key ring's id.
        id: String,
        /// How long to wait for nodes to pick up the new version (0: do not wait).
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
        wait: Duration,
    },
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The full volume id (`kcredctl list --wide` shows it).
    #[arg(value_name = "VOLUME-ID")]
    pub volume_id: String,
    /// Why, for the audit log (an incident number helps later).
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Prints the audit records that match the filters.
    ///
    /// A table (time, seq, action, actor, subject, node, ns/pod, decision,
    /// reason), or with --output json the records as JSON lines. Querying
    /// shows records, it does not prove them genuine: run `audit verify`.
    ///
    /// Who: auditors and operators.
    #[command(after_long_help = "Example:\n  \
        kcredctl audit query --namespace prod --action deny --since -24h\n  \
        kcredctl audit query --subject HTTP/web --since 2026-05-01T00:00:00Z --until 2026-05-02")]
    Query(AuditFilterArgs),
    /// Writes matching audit records as stored, for a SIEM or an archive.
    ///
    /// JSON lines, byte for byte as the controller stores them. Each line carries its hash and signature, and an unfiltered export
    /// can be verified offline with `audit verify --file`. With -o the file
    /// appears only once the export is complete. The count goes to stderr.
    ///
    /// Who: auditors and operators.
    #[command(after_long_help = "Example:\n  \
        kcredctl audit export --since -1d -o audit-$(date +%F).jsonl\n  \
        kcredctl audit export | siem-ingest")]
    Export {
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Write to FILE (created 0600) instead of stdout.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Proves the audit log intact, on your machine.
    ///
    /// Checks that every record is signed and unedited, none is missing or
    /// out of place, and the log still reaches the head (last seq and hash)
    /// the controller stored.
    ///
    /// Online (default): fetches the head and public key, downloads the
    /// whole log into a private temporary file and checks it locally. With
    /// --public-key the check uses your pinned key, and a controller
    /// reporting a different key is a failure: keep the key somewhere the
    /// controller's host cannot change.
    ///
    /// Offline (--file): checks an export you hold, with the key you give;
    /// add --head-seq and --head-hash (printed by an earlier verify) to also
    /// detect records cut from the end.
    ///
    /// Several controllers (--every-controller): each controller signs its
    /// own chain with its own key; every chain in --controller is checked
    /// as above, one line each, and the exit is 0 only if all verify.
    ///
    /// Prints "OK: N records, chain intact, head seq S" and exits 0, or
    /// names the first problem (edited, missing, reordered or foreign
    /// records) and exits 1.
    ///
    /// Who: auditors and operators (offline: anyone).
    #[command(after_long_help = "Example:\n  \
        kcredctl audit verify --public-key 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29\n  \
        kcredctl audit verify --file audit.jsonl --public-key 3b6a...da29 --head-seq 1200 --head-hash 9f86...\n  \
        kcredctl --controller https://kcred-1:7420,https://kcred-2:7420 audit verify --every-controller --merged -o timeline.jsonl")]
    Verify(VerifyArgs),
}

/// Filters shared by `audit query` and `audit export`; all set must match.
#[derive(Args, Debug, Clone, Default)]
pub struct AuditFilterArgs {
    /// Subject contains this text (principal, certificate name, key id).
    #[arg(long, value_name = "S")]
    pub subject: Option<String>,
    /// Exact namespace.
    #[arg(long, value_name = "N")]
    pub namespace: Option<String>,
    /// Exact node name.
    #[arg(long, value_name = "X")]
    pub node: Option<String>,
    /// Exact action: issue, renew, deny, rotate, revoke, node_lost, node_returned, admin.
    #[arg(long, value_name = "A", value_parser = parse_action)]
    pub action: Option<Action>,
    /// At or after T: RFC 3339 (2026-05-01T12:00:00Z, 2026-05-01) or relative (-1h, -2d).
    #[arg(long, value_name = "T", allow_hyphen_values = true, value_parser = parse_time_arg)]
    pub since: Option<i64>,
    /// Before T (exclusive), same forms as --since.
    #[arg(long, value_name = "T", allow_hyphen_values = true, value_parser = parse_time_arg)]
    pub until: Option<i64>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("several").args(["every_controller", "chains"])))]
pub struct VerifyArgs {
    /// The audit public key (64 hex digits) to pin.
    #[arg(long, value_name = "HEX", value_parser = parse_public_key)]
    pub public_key: Option<[u8; 32]>,
    /// Verify this local export instead of contacting the controller.
    #[arg(long, value_name = "PATH", requires = "public_key")]
    pub file: Option<PathBuf>,
    /// Sequence number of the head the log must still reach (with --file).
    #[arg(long, value_name = "N", requires_all = ["file", "head_hash"])]
    pub head_seq: Option<u64>,
    /// Hash of the record at --head-seq (64 hex digits).
    #[arg(long, value_name = "H", requires = "head_seq", value_parser = parse_hash)]
    pub head_hash: Option<String>,
    /// When the oldest segments were archived: the sequence number of the
    /// last archived record (what verifying the archive reported as head).
    /// The log must continue right after it.
    #[arg(long, value_name = "N", requires = "after_hash")]
    pub after_seq: Option<u64>,
    /// Hash of the record at --after-seq (64 hex digits).
    #[arg(long, value_name = "H", requires = "after_seq", value_parser = parse_hash)]
    pub after_hash: Option<String>,
    /// Verify the chain of every controller in --controller (each signs
    /// its own), not just the first that answers; prints one line per
    /// chain with its key id and public key to compare with your pins.
    #[arg(long, conflicts_with_all = ["file", "public_key", "after_seq"])]
    pub every_controller: bool,
    /// Verify audit files you hold, one chain each (every controller signs
    /// its own), offline: PATH=PUBLIC_KEY, or PATH=PUBLIC_KEY@SEQ:HASH to
    /// also require the head an earlier verify printed. Repeat per chain.
    #[arg(
        long = "chain",
        value_name = "PATH=KEY[@SEQ:HASH]",
        value_parser = parse_chain,
        conflicts_with_all = ["file", "public_key", "every_controller", "after_seq"]
    )]
    pub chains: Vec<ChainFile>,
    /// With --every-controller or --chain: write the records of all chains
    /// as JSON lines merged by time (unix_ms, then key id, then seq).
    #[arg(long, requires = "several")]
    pub merged: bool,
    /// Write the --merged records to FILE (created 0600) instead of stdout.
    #[arg(short = 'o', long = "out", value_name = "FILE", requires = "merged")]
    pub out: Option<PathBuf>,
}

fn parse_action(s: &str) -> Result<Action, String> {
    s.parse::<Action>().map_err(|e| {
        let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
        format!("{e}; one of: {}", all.join(", "))
    })
}

fn parse_public_key(s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "an Ed25519 public key is 32 bytes (64 hex digits), this is {}",
            bytes.len()
        )
    })
}

/// One audit file and the key its chain is signed with (`--chain`).
#[derive(Debug, Clone)]
pub struct ChainFile {
    pub path: PathBuf,
    pub public_key: [u8; 32],
    /// The head the file must still reach: (seq, hash).
    pub head: Option<(u64, String)>,
}

fn parse_chain(s: &str) -> Result<ChainFile, String> {
    let (path, rest) = s
        .rsplit_once('=')
        .filter(|(p, _)| !p.is_empty())
        .ok_or("expected PATH=PUBLIC_KEY or PATH=PUBLIC_KEY@SEQ:HASH")?;
    let (key, head) = match rest.split_once('@') {
        None => (rest, None),
        Some((key, head)) => {
            let (seq, hash) = head.split_once(':').ok_or("the head after @ is SEQ:HASH")?;
            let seq = seq
                .parse::<u64>()
                .map_err(|_| format!("the head's sequence number {seq:?} is not a number"))?;
            (key, Some((seq, parse_hash(hash)?)))
        }
    };
    Ok(ChainFile {
        path: PathBuf::from(path),
        public_key: parse_public_key(key)?,
        head,
    })
}

fn parse_hash(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err("a record hash is 64 hex digits (SHA-256)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kcredctl").chain(args.iter().copied()))
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn relative_times_with_a_dash_are_values_not_flags() {
        let cli = parse(&["audit", "query", "--since", "-1h", "--action", "node_lost"]);
        let Ok(Cli {
            command: Command::Audit(AuditCmd::Query(f)),
            ..
        }) = cli
        else {
            panic!("parse failed: {cli:?}");
        };
        assert!(f.since.is_some());
        assert_eq!(f.action, Some(Action::NodeLost));
    }

    #[test]
    fn usage_errors_are_reported_by_clap_with_exit_code_2() {
        let bad = [
            &["rotate", "keytab", "p", "--wait", "5x"][..],
            &["audit", "query", "--action", "explode"],
            &["audit", "verify", "--file", "x.jsonl"],
            &["audit", "verify", "--public-key", "abcd"],
            &[
                "audit",
                "verify",
                "--file",
                "x",
                "--public-key",
                &"ab".repeat(32),
                "--head-seq",
                "3",
            ],
            &["status", "--output", "yaml"],
            // A pin and a file name one chain, not every controller's.
            &[
                "audit",
                "verify",
                "--every-controller",
                "--public-key",
                &"ab".repeat(32),
            ],
            &["audit", "verify", "--every-controller", "--file", "x"],
            &["audit", "verify", "--merged"],
            // A chain names its own key; not one for a --file.
            &["audit", "verify", "--chain", "a.jsonl"],
            &[
                "audit",
                "verify",
                "--chain",
                &format!("a.jsonl={}", "ab".repeat(31)),
            ],
            &[
                "audit",
                "verify",
                "--chain",
                &format!("a.jsonl={}@x:{}", "ab".repeat(32), "cd".repeat(32)),
            ],
            &[
                "audit",
                "verify",
                "--chain",
                &format!("a.jsonl={}", "ab".repeat(32)),
                "--every-controller",
            ],
            &[
                "audit",
                "verify",
                "--chain",
                &format!("a.jsonl={}", "ab".repeat(32)),
                "--public-key",
                &"ab".repeat(32),
            ],
            &["audit", "verify", "--every-controller", "-o", "t.jsonl"],
        ];
        for args in bad {
            let err = parse(args).expect_err(&format!("{args:?} must be refused"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn your_principal_and_the_principals_you_name_stay_apart() {
        let cli = parse(&["--principal", "me@R", "list", "--principal", "HTTP/x@R"]);
        let cli = cli.expect("parses");
        assert_eq!(cli.global.principal.as_deref(), Some("me@R"));
        let Command::List(list) = &cli.command else {
            panic!("not list: {cli:?}");
        };
        assert_eq!(list.principal.as_deref(), Some("HTTP/x@R"));

        let cli = parse(&["--principal", "me@R", "rotate", "keytab", "HTTP/x@R"]);
        let cli = cli.expect("parses");
        assert_eq!(cli.global.principal.as_deref(), Some("me@R"));
        let Command::Rotate(RotateCmd::Keytab { principal, .. }) = &cli.command else {
            panic!("not rotate keytab: {cli:?}");
        };
        assert_eq!(principal, "HTTP/x@R");

        let cli = parse(&["list", "--principal", "HTTP/x@R"]).expect("parses");
        assert_ne!(cli.global.principal.as_deref(), Some("HTTP/x@R"));
    }

    #[test]
    fn global_options_work_after_the_subcommand() {
        let cli = parse(&["list", "--node", "a", "--output", "json", "--timeout", "5s"]);
        let cli = cli.expect("parses");
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(cli.global.timeout, Duration::from_secs(5));
    }
}
