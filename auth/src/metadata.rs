//! gRPC glue: carrying a token in metadata, and turning the authenticated
//! principal into the node name the controller authorizes against.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::AuthError;

/// gRPC metadata key carrying the token. The HTTP `Authorization` header
/// (lower-case, as HTTP/2 requires) so proxies and tooling recognise it as a
/// credential and keep it out of logs.
pub const METADATA_KEY: &str = "authorization";

/// Response metadata key the controller sets when the call's TLS
/// connection holds a proven node principal: later calls on that
/// connection need no token. A client that never sees it keeps sending
/// one with every call.
pub const PROVEN_KEY: &str = "kcred-connection-proven";

/// The scheme RFC 4559 uses for Kerberos/SPNEGO tokens in `Authorization`.
const SCHEME: &str = "Negotiate";

/// Largest metadata value accepted, so a hostile client cannot make the
/// controller decode megabytes. A host principal's AP-REQ is about 1 KiB;
/// even a ticket with a large PAC stays well under this.
const MAX_METADATA_LEN: usize = 64 * 1024;

/// Formats a token as the metadata value `Negotiate <base64>`, the form
/// HTTP servers and debugging tools already understand.
pub fn to_metadata_value(token: &[u8]) -> String {
    format!("{SCHEME} {}", STANDARD.encode(token))
}

/// Extracts the token from a metadata value made by [`to_metadata_value`].
/// The scheme is matched case-insensitively (RFC 9110); anything else,
/// including an empty or non-base64 token, is refused with a reason that
/// never quotes the value, because it may be a credential.
pub fn from_metadata_value(value: &str) -> Result<Vec<u8>, AuthError> {
    if value.len() > MAX_METADATA_LEN {
        return Err(AuthError::Metadata("value is too long"));
    }
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::Metadata("expected \"Negotiate <base64 token>\""))?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Err(AuthError::Metadata("scheme is not Negotiate"));
    }
    let encoded = rest.trim_start_matches(' ');
    if encoded.is_empty() {
        return Err(AuthError::Metadata("no token after Negotiate"));
    }
    STANDARD
        .decode(encoded)
        .map_err(|_| AuthError::Metadata("token is not valid base64"))
}

/// Maps an authenticated host principal to the node it belongs to:
/// `host/<fqdn>@<realm>` gives `<fqdn>`, or its first label when `short` is
/// set (for clusters whose node names are short host names).
///
/// Only `host/` principals of exactly `realm` qualify: a user's or another
/// service's principal (e.g. `HTTP/`), or one from a trusted foreign realm,
/// authenticates fine but must not be able to act as a node. The host part
/// must already be a lower-case DNS name, as Kubernetes node names are;
/// it is refused rather than normalised, so two distinct principals can
/// never map to the same node.
pub fn node_name_from_principal(
    principal: &str,
    realm: &str,
    short: bool,
) -> Result<String, AuthError> {
    let refuse = |reason| AuthError::NotANode {
        principal: principal.to_string(),
        realm: realm.to_string(),
        reason,
    };
    if realm.is_empty() {
        return Err(AuthError::invalid("realm", "empty"));
    }
    let (name, principal_realm) = principal
        .rsplit_once('@')
        .ok_or_else(|| refuse("principal has no realm"))?;
    if principal_realm != realm {
        return Err(refuse("principal is from another realm"));
    }
    if name.contains('\\') {
        return Err(refuse("principal contains escaped characters"));
    }
    let mut components = name.split('/');
    let (Some(service), Some(host), None) =
        (components.next(), components.next(), components.next())
    else {
        return Err(refuse("not a two-component host/<fqdn> principal"));
    };
    if service != "host" {
        return Err(refuse("not a host/ principal"));
    }
    if !is_dns_name(host) {
        return Err(refuse(
            "host part is not a lower-case DNS name (RFC 1123, at most 253 characters)",
        ));
    }
    Ok(if short {
        host.split('.').next().unwrap_or(host).to_string()
    } else {
        host.to_string()
    })
}

/// RFC 1123 host name in the lower-case form Kubernetes requires of node
/// names (DNS-1123 subdomain): labels of 1–63 `[a-z0-9-]` characters that
/// neither start nor end with `-`, 253 characters at most, no trailing dot.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "KCRED.TEST";

    #[test]
    fn node_names_from_host_principals() {
        let p = "host/node-a.example.com@KCRED.TEST";
        assert_eq!(
            node_name_from_principal(p, REALM, false).unwrap(),
            "node-a.example.com"
        );
        assert_eq!(node_name_from_principal(p, REALM, true).unwrap(), "node-a");
        assert_eq!(
            node_name_from_principal("host/node-b@KCRED.TEST", REALM, true).unwrap(),
            "node-b"
        );
    }

    #[test]
    fn non_node_principals_are_refused() {
        let cases = [
            ("host/node-a.example.com@OTHER.TEST", "another realm"),
            ("host/node-a.example.com@kcred.test", "another realm"),
            ("host/node-a.example.com", "no realm"),
            ("alice@KCRED.TEST", "two-component"),
            ("HTTP/node-a.example.com@KCRED.TEST", "not a host/"),
            ("Host/node-a.example.com@KCRED.TEST", "not a host/"),
            ("host/node-a.example.com/x@KCRED.TEST", "two-component"),
            ("host/Node-A.example.com@KCRED.TEST", "DNS name"),
            ("host/@KCRED.TEST", "DNS name"),
            ("host/node-a..example.com@KCRED.TEST", "DNS name"),
            ("host/-node.example.com@KCRED.TEST", "DNS name"),
            ("host/node_a.example.com@KCRED.TEST", "DNS name"),
            ("host/node-a.example.com.@KCRED.TEST", "DNS name"),
            ("host/node\\/a@KCRED.TEST", "escaped"),
            ("host/node-a@evil@KCRED.TEST", "DNS name"),
        ];
        for (principal, why) in cases {
            let err = node_name_from_principal(principal, REALM, false)
                .expect_err(&format!("{principal} accepted"));
            let msg = err.to_string();
            assert!(msg.contains(why), "{principal}: {msg}");
            assert!(matches!(err, AuthError::NotANode { .. }), "{principal}");
        }
        let long = format!("host/{}.example.com@KCRED.TEST", "a".repeat(64));
        assert!(node_name_from_principal(&long, REALM, false).is_err());
        assert!(matches!(
            node_name_from_principal("host/a@", "", false),
            Err(AuthError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn metadata_round_trip() {
        let token = [0u8, 1, 2, 250, 251, 252, 253, 254, 255];
        let value = to_metadata_value(&token);
        assert!(value.starts_with("Negotiate "));
        assert_eq!(from_metadata_value(&value).unwrap(), token);
        let lower = value.replacen("Negotiate", "negotiate", 1);
        assert_eq!(from_metadata_value(&lower).unwrap(), token);
    }

    #[test]
    fn malformed_metadata_is_refused_without_echoing_it() {
        let secret = "c2VjcmV0LXRva2Vu";
        let cases = [
            ("", "expected"),
            ("Negotiate", "expected"),
            ("Negotiate ", "expected"),
            ("Negotiate    ", "expected"),
            (&*format!("Bearer {secret}"), "not Negotiate"),
            (&*format!("Basic {secret}"), "not Negotiate"),
            (&*format!("Negotiate {secret}!!"), "base64"),
            (&*format!("Negotiate {secret}="), "base64"),
            (&*format!("Negotiate {secret} x"), "base64"),
            ("Negotiate ###", "base64"),
        ];
        for (value, why) in cases {
            let err = from_metadata_value(value).expect_err(&format!("{value:?} accepted"));
            let msg = err.to_string();
            assert!(matches!(err, AuthError::Metadata(_)), "{value:?}");
            assert!(msg.contains(why), "{value:?}: {msg}");
            assert!(!msg.contains(secret), "{msg} echoes the token");
        }
        let huge = format!("Negotiate {}", "A".repeat(MAX_METADATA_LEN));
        assert!(
            from_metadata_value(&huge)
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }
}
