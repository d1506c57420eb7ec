//! The controller's X.509 certificate authority.
//!
//! Pods ask for TLS certificates for their DNS names; the controller signs
//! short-lived leaves with one CA, either generated on first start
//! ([`CertificateAuthority::generate`]) or supplied by the operator
//! ([`CertificateAuthority::from_pem`]). Pods receive `ca.crt`
//! ([`CertificateAuthority::cert_pem`]) as their trust anchor.
//!
//! Leaf policy (a public contract, tested against the `openssl` CLI):
//! * fresh ECDSA P-256 key per certificate, never reused;
//! * SANs are exactly the requested DNS names, in order, nothing added;
//!   CN is the first name when it fits the 64-byte X.520 bound, otherwise the
//!   subject is empty and the SAN extension is marked critical (RFC 5280);
//! * names must be lowercase RFC 1123 host names without a trailing dot.
//!   Wildcards (`*.x`) and IP addresses are refused: a pod gets exactly the
//!   names policy approved, and a wildcard would widen that silently;
//! * EKU serverAuth + clientAuth, KeyUsage digitalSignature, CA:FALSE,
//!   subject and authority key identifiers;
//! * 16-byte random positive serial (126 random bits);
//! * valid from now - 60 s (clock skew) to now + lifetime, clamped to the CA's
//!   own notAfter so a leaf never outlives its issuer.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
    string::Ia5String,
};
use zeroize::Zeroizing;

/// Shortest leaf lifetime: anything shorter expires before a pod can use it.
pub const MIN_LEAF_LIFETIME: Duration = Duration::from_secs(60);
/// Longest leaf lifetime: the CA/Browser Forum ceiling, honoured by common TLS stacks.
pub const MAX_LEAF_LIFETIME: Duration = Duration::from_secs(397 * 24 * 3600);
/// Bounds on a generated CA's validity (one hour to a century).
pub const MIN_CA_VALIDITY: Duration = Duration::from_secs(3600);
/// See [`MIN_CA_VALIDITY`].
pub const MAX_CA_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Most DNS names one leaf may carry.
pub const MAX_DNS_NAMES: usize = 32;

/// Backdating of notBefore so that pods with a slightly slow clock accept new certificates.
const CLOCK_SKEW_SECS: i64 = 60;
/// X.520 upper bound for commonName.
const MAX_CN_LEN: usize = 64;
/// Name used for the self-test issuance in [`CertificateAuthority::from_pem`].
const PROBE_NAME: &str = "kcred-ca-self-test.invalid";

/// Why a CA could not be created or loaded, or a leaf not issued.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The crypto backend could not create a key pair.
    #[error("generating key pair: {0}")]
    KeyGeneration(#[source] rcgen::Error),
    /// Building or signing the certificate failed.
    #[error("signing certificate: {0}")]
    Signing(#[source] rcgen::Error),
    /// The system random generator failed.
    #[error("system random generator failed")]
    Random,
    /// The system clock is before 1970 or out of range.
    #[error("system clock out of range")]
    Clock,
    /// The CA common name is empty, too long or contains control characters.
    #[error("invalid CA common name: {0}")]
    InvalidCommonName(&'static str),
    /// The operator's CA certificate PEM is unusable.
    #[error("parsing CA certificate: {0}")]
    ParseCaCert(String),
    /// The operator's CA key PEM is unusable (must be unencrypted PKCS#8, `BEGIN PRIVATE KEY`).
    #[error("parsing CA private key (expected unencrypted PKCS#8): {0}")]
    ParseCaKey(String),
    /// The supplied certificate may not sign certificates.
    #[error("certificate is not a usable CA: {0}")]
    NotACa(&'static str),
    /// The supplied private key does not belong to the supplied certificate.
    #[error("CA private key does not match the CA certificate")]
    KeyMismatch,
    /// The CA is valid but its leaves could not be made to chain to it.
    #[error("unsupported CA certificate: {0}")]
    UnsupportedCa(String),
    /// The CA's notAfter has passed.
    #[error("CA certificate has expired")]
    CaExpired,
    /// The number of requested names is outside 1..=MAX_DNS_NAMES.
    #[error("need 1 to {MAX_DNS_NAMES} DNS names, got {0}")]
    SanCount(usize),
    /// `name` (as requested) is not an acceptable DNS SAN because of `reason`.
    #[error("invalid DNS name {name:?}: {reason}")]
    #[allow(missing_docs)]
    InvalidSan { name: String, reason: &'static str },
    /// The `requested` lifetime or CA validity is outside `min..=max`.
    #[error("lifetime {requested:?} outside {min:?}..={max:?}")]
    #[allow(missing_docs)]
    Lifetime {
        requested: Duration,
        min: Duration,
        max: Duration,
    },
}

/// A freshly issued leaf certificate and its private key, ready for a pod.
pub struct IssuedCert {
    /// The leaf certificate (`tls.crt`), PEM.
    pub cert_pem: String,
    /// The leaf's PKCS#8 private key (`tls.key`), PEM; wiped on drop.
    pub key_pem: Zeroizing<String>,
    /// Serial number as lowercase hex (matches `openssl x509 -serial` ignoring case).
    pub serial_hex: String,
    /// Start of validity (already backdated for clock skew).
    pub not_before: SystemTime,
    /// End of validity, possibly clamped to the CA's notAfter.
    pub not_after: SystemTime,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial_hex", &self.serial_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The signing CA: its certificate, its key, and what is needed to issue leaves.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: Zeroizing<String>,
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    not_after_unix: i64,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .field("not_after", &unix_to_system(self.not_after_unix))
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a self-signed CA (ECDSA P-256, CA:TRUE pathlen 0, keyCertSign +
    /// cRLSign) for clusters where the operator brings none. Seal
    /// [`Self::key_pem`] into the store: losing it means re-trusting every pod.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, CertError> {
        validate_common_name(common_name)?;
        check_range(validity, MIN_CA_VALIDITY, MAX_CA_VALIDITY)?;
        let now = unix_now()?;
        let not_after = now.saturating_add(secs_i64(validity));

        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertError::KeyGeneration)?;
        let (mut params, _) = base_params(Some(common_name), now - CLOCK_SKEW_SECS, not_after)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(CertError::Signing)?;

        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            issuer: Issuer::new(params, key),
            subject: format!("CN={common_name}"),
            not_after_unix: not_after,
        })
    }

    /// Loads an operator-supplied CA: exactly one certificate (CA:TRUE, keyCertSign
    /// if KeyUsage is present, not expired) and its unencrypted PKCS#8 key. Intermediates are
    /// accepted, but pods then get only this certificate as `ca.crt`. A probe leaf is signed
    /// and checked before returning, so a CA whose subject rcgen cannot reproduce
    /// byte-for-byte (e.g. repeated attribute types like `DC=example,DC=com`) is refused
    /// here rather than producing leaves that fail to verify.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let der = single_cert_der(cert_pem)?;
        let ca = parse_cert(&der).map_err(CertError::ParseCaCert)?;

        match ca.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(CertError::NotACa("basicConstraints CA:TRUE missing")),
            Err(e) => return Err(CertError::ParseCaCert(e.to_string())),
        }
        match ca.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(CertError::NotACa("keyUsage lacks keyCertSign"));
            }
            Ok(_) => {}
            Err(e) => return Err(CertError::ParseCaCert(e.to_string())),
        }
        let not_after_unix = ca.validity().not_after.timestamp();
        if not_after_unix <= unix_now()? {
            return Err(CertError::CaExpired);
        }
        // rcgen panics on empty RDNs and rejects multi-valued ones; refuse both clearly.
        if ca.subject().iter().any(|rdn| rdn.iter().count() != 1) {
            return Err(CertError::UnsupportedCa(
                "subject has empty or multi-valued RDNs".into(),
            ));
        }

        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::ParseCaKey(e.to_string()))?;
        if key.der_bytes() != ca.public_key().subject_public_key.data.as_ref() {
            return Err(CertError::KeyMismatch);
        }
        let normalized_pem = der_to_pem("CERTIFICATE", &der);
        let normalized_key = Zeroizing::new(key.serialize_pem());
        let issuer = Issuer::from_ca_cert_pem(&normalized_pem, key)
            .map_err(|e| CertError::UnsupportedCa(e.to_string()))?;

        let this = Self {
            cert_pem: normalized_pem,
            key_pem: normalized_key,
            issuer,
            subject: ca.subject().to_string(),
            not_after_unix,
        };
        this.self_test(&ca)?;
        Ok(this)
    }

    /// The CA certificate (PEM), delivered to pods as their trust anchor.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's PKCS#8 private key (PEM), for sealing into the store; never log it.
    pub fn key_pem(&self) -> &Zeroizing<String> {
        &self.key_pem
    }

    /// End of the CA's validity; leaves are clamped to it, so renew the CA well before.
    pub fn not_after(&self) -> SystemTime {
        unix_to_system(self.not_after_unix)
    }

    /// Issues a leaf for exactly `dns_names` (see the module docs for the policy).
    /// `lifetime` must be within [`MIN_LEAF_LIFETIME`]..=[`MAX_LEAF_LIFETIME`]; the
    /// resulting notAfter is clamped to the CA's notAfter (check
    /// [`IssuedCert::not_after`] when scheduling renewal).
    pub fn issue(&self, dns_names: &[String], lifetime: Duration) -> Result<IssuedCert, CertError> {
        validate_dns_names(dns_names)?;
        check_range(lifetime, MIN_LEAF_LIFETIME, MAX_LEAF_LIFETIME)?;
        let now = unix_now()?;
        let requested_end = now.saturating_add(secs_i64(lifetime));
        let not_after = requested_end.min(self.not_after_unix);
        if not_after <= now {
            return Err(CertError::CaExpired);
        }
        if not_after < requested_end {
            tracing::info!(ca = %self.subject, "leaf lifetime clamped to the CA's notAfter");
        }
        let not_before = now - CLOCK_SKEW_SECS;

        let cn = Some(dns_names[0].as_str()).filter(|n| n.len() <= MAX_CN_LEN);
        let (mut params, serial) = base_params(cn, not_before, not_after)?;
        params.subject_alt_names = dns_names
            .iter()
            .map(|n| Ia5String::try_from(n.as_str()).map(SanType::DnsName))
            .collect::<Result<_, _>>()
            .map_err(CertError::Signing)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;

        let key = Zeroizing::new(
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertError::KeyGeneration)?,
        );
        let cert = params
            .signed_by(&*key, &self.issuer)
            .map_err(CertError::Signing)?;
        let serial_hex = hex::encode(serial);
        tracing::debug!(serial = %serial_hex, names = dns_names.len(), "issued leaf certificate");
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            serial_hex,
            not_before: unix_to_system(not_before),
            not_after: unix_to_system(not_after),
        })
    }

    /// Signs a probe leaf and checks that it names and verifies under `ca`.
    fn self_test(
        &self,
        ca: &x509_parser::certificate::X509Certificate<'_>,
    ) -> Result<(), CertError> {
        let probe = self.issue(&[PROBE_NAME.to_owned()], MIN_LEAF_LIFETIME)?;
        let der = single_cert_der(&probe.cert_pem)?;
        let leaf = parse_cert(&der).map_err(CertError::UnsupportedCa)?;
        if leaf.issuer().as_raw() != ca.subject().as_raw() {
            return Err(CertError::UnsupportedCa(
                "subject cannot be reproduced byte-for-byte (repeated attribute types?)".into(),
            ));
        }
        leaf.verify_signature(Some(ca.public_key()))
            .map_err(|_| CertError::KeyMismatch)
    }
}

/// Parameters shared by CA and leaf: subject, random serial, validity.
fn base_params(
    cn: Option<&str>,
    not_before: i64,
    not_after: i64,
) -> Result<(CertificateParams, [u8; 16]), CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let serial = random_serial()?;
    params.serial_number = Some(serial.to_vec().into());
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    Ok((params, serial))
}

fn parse_cert(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Extracts the DER of the only CERTIFICATE block; bundles are refused to keep `ca.crt` exact.
fn single_cert_der(pem: &str) -> Result<Vec<u8>, CertError> {
    let mut found = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| CertError::ParseCaCert(e.to_string()))?;
        if block.label == "CERTIFICATE" {
            found.push(block.contents);
        }
    }
    match found.len() {
        1 => Ok(found.swap_remove(0)),
        n => Err(CertError::ParseCaCert(format!(
            "expected exactly one CERTIFICATE block, found {n}"
        ))),
    }
}

fn der_to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn validate_common_name(cn: &str) -> Result<(), CertError> {
    let problem = match cn {
        "" => "empty",
        _ if cn.len() > MAX_CN_LEN => "longer than 64 bytes",
        _ if cn.chars().any(char::is_control) => "contains control characters",
        _ => return Ok(()),
    };
    Err(CertError::InvalidCommonName(problem))
}

fn validate_dns_names(names: &[String]) -> Result<(), CertError> {
    if names.is_empty() || names.len() > MAX_DNS_NAMES {
        return Err(CertError::SanCount(names.len()));
    }
    for (i, name) in names.iter().enumerate() {
        let checked = if names[..i].contains(name) {
            Err("duplicate")
        } else {
            validate_dns_name(name)
        };
        checked.map_err(|reason| CertError::InvalidSan {
            name: name.clone(),
            reason,
        })?;
    }
    Ok(())
}

/// Lowercase RFC 1123 host name; the last label must not be all digits (that is an IP).
fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("length must be 1..=253 bytes");
    }
    if name.contains('*') {
        return Err("wildcards are not supported");
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1..=63 bytes (no empty labels or trailing dot)");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only lowercase a-z, 0-9, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("looks like an IP address (IP SANs are not supported)");
    }
    Ok(())
}

fn check_range(requested: Duration, min: Duration, max: Duration) -> Result<(), CertError> {
    if requested < min || requested > max {
        return Err(CertError::Lifetime {
            requested,
            min,
            max,
        });
    }
    Ok(())
}

/// 16 random bytes forming a positive DER INTEGER of exactly 16 bytes.
fn random_serial() -> Result<[u8; 16], CertError> {
    let mut serial = [0u8; 16];
    crate::crypto::random::fill(&mut serial).map_err(|_| CertError::Random)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

fn unix_now() -> Result<i64, CertError> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Clock)?
        .as_secs();
    i64::try_from(secs).map_err(|_| CertError::Clock)
}

fn secs_i64(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn to_offset(unix: i64) -> Result<time::OffsetDateTime, CertError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CertError::Clock)
}

/// Pre-1970 or unrepresentable instants collapse to the epoch; no certificate here has them.
fn unix_to_system(unix: i64) -> SystemTime {
    let secs = u64::try_from(unix).unwrap_or(0);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
#[path = "ca/tests.rs"]
mod tests;
