//! `gss_acquire_cred_from`: the one GSSAPI call kcred needs that libgssapi
//! does not wrap, and the only `unsafe` code in this crate.
//!
//! Why it is needed: tests run many realms in one process and a real process
//! may hold several identities, so which keytab and which credential cache a
//! credential uses must be chosen per credential, not through process-wide
//! variables (`KRB5_KTNAME`, `KRB5_CLIENT_KTNAME`, `KRB5CCNAME`). MIT's
//! credential store extension (`gssapi_ext.h`, no RFC) does exactly that.
//! The result is handed to libgssapi as an owned [`Cred`], so everything else
//! (contexts, names, error text) goes through its safe API.

use std::ffi::{CString, c_void};
use std::ptr;

use libgssapi::credential::Cred;
use libgssapi::error::{Error as GssError, MajorFlags};
use libgssapi_sys::{
    _GSS_C_INDEFINITE, GSS_C_ACCEPT, GSS_C_INITIATE, GSS_S_COMPLETE, OM_uint32, gss_OID_desc,
    gss_OID_set_desc, gss_acquire_cred_from, gss_buffer_desc, gss_cred_id_t, gss_cred_usage_t,
    gss_import_name, gss_key_value_element_desc, gss_key_value_set_desc, gss_name_t,
    gss_release_name,
};

/// DER body of the Kerberos 5 mechanism OID, 1.2.840.113554.1.2.2. The
/// credential is restricted to it so nothing negotiates SPNEGO or IAKERB.
static KRB5_MECH_OID: [u8; 9] = *b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02";
/// DER body of GSS_KRB5_NT_PRINCIPAL_NAME, 1.2.840.113554.1.2.2.1, so a name
/// like `host/node-a.example.com@REALM` is parsed as a Kerberos principal.
static KRB5_PRINCIPAL_NAME_OID: [u8; 10] = *b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01";

/// Which half of a context the credential will be used for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Usage {
    Initiate,
    Accept,
}

/// A GSSAPI failure, already rendered to text. MIT keeps the detailed minor
/// status message in thread-local storage, so it must be formatted on the
/// thread that made the failing call: that happens here, before any caller
/// can move the error to another thread.
#[derive(Debug)]
pub(crate) struct GssFailure {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) message: String,
}

impl GssFailure {
    pub(crate) fn from_gss(e: GssError) -> GssFailure {
        GssFailure {
            major: e.major.bits(),
            minor: e.minor,
            message: readable(&e.to_string(), e.minor),
        }
    }
}

/// Drops GSSAPI's boilerplate around the part that says what happened:
/// "Unspecified GSS failure.  Minor code may provide more information (X)"
/// becomes "X", and a minor status of 0 loses its "(Unknown error)".
fn readable(text: &str, minor: u32) -> String {
    const UNSPECIFIED: &str = "Unspecified GSS failure.  Minor code may provide more information (";
    let text = text.trim();
    if let Some(inner) = text
        .strip_prefix(UNSPECIFIED)
        .and_then(|t| t.strip_suffix(')'))
    {
        return inner.to_string();
    }
    if minor == 0
        && let Some(major) = text.strip_suffix(" (Unknown error)")
    {
        return major.to_string();
    }
    text.to_string()
}

/// Acquires a Kerberos credential whose keytab and ccache come from `store`
/// (MIT cred store keys such as `client_keytab`, `ccache`, `keytab`,
/// `rcache`). `principal` selects the identity (a Kerberos principal name);
/// `None` means any key in the keytab (what an acceptor wants).
pub(crate) fn acquire_cred_from(
    principal: Option<&str>,
    usage: Usage,
    store: &[(&str, &str)],
) -> Result<Cred, AcquireError> {
    // Everything the C call borrows is built first and outlives the call.
    let pairs: Vec<(CString, CString)> = store
        .iter()
        .map(|(k, v)| Ok((cstring(k)?, cstring(v)?)))
        .collect::<Result<_, AcquireError>>()?;
    let mut elements: Vec<gss_key_value_element_desc> = pairs
        .iter()
        .map(|(k, v)| gss_key_value_element_desc {
            key: k.as_ptr(),
            value: v.as_ptr(),
        })
        .collect();
    let store_desc = gss_key_value_set_desc {
        count: u32::try_from(elements.len())
            .map_err(|_| AcquireError::Argument("too many credential store entries".into()))?,
        elements: elements.as_mut_ptr(),
    };
    let mut mech = gss_OID_desc {
        length: KRB5_MECH_OID.len() as u32,
        // GSSAPI takes non-const pointers but never writes through OIDs passed
        // as input, so pointing at immutable static data is sound.
        elements: KRB5_MECH_OID.as_ptr() as *mut c_void,
    };
    let mut mechs = gss_OID_set_desc {
        count: 1,
        elements: &mut mech,
    };
    let name = match principal {
        Some(p) => Some(ImportedName::krb5_principal(p)?),
        None => None,
    };
    let usage_c = match usage {
        Usage::Initiate => GSS_C_INITIATE,
        Usage::Accept => GSS_C_ACCEPT,
    } as gss_cred_usage_t;

    let mut minor: OM_uint32 = GSS_S_COMPLETE;
    let mut cred: gss_cred_id_t = ptr::null_mut();
    // SAFETY: every pointer passed is valid for the duration of the call:
    // `store_desc` points into `elements`, whose key/value pointers point into
    // `pairs` (NUL-terminated CStrings); `mechs` points at `mech`, which points
    // at static OID bytes; the name is either null (GSS_C_NO_NAME) or a live
    // gss_name_t owned by `name`. `cred` and `minor` are valid out-pointers;
    // the optional outputs (actual mechs, time_rec) are null, which the API
    // allows. The library does not keep any of these pointers after return.
    let major = unsafe {
        gss_acquire_cred_from(
            &mut minor,
            name.as_ref().map_or(ptr::null_mut(), |n| n.0),
            _GSS_C_INDEFINITE,
            &mut mechs,
            usage_c,
            &store_desc,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    drop(name);
    if is_error(major) {
        // On failure MIT leaves `cred` as GSS_C_NO_CREDENTIAL; nothing to free.
        return Err(AcquireError::Gss(GssFailure::from_gss(GssError {
            major: MajorFlags::from_bits_retain(major),
            minor,
        })));
    }
    // SAFETY: the call succeeded, so `cred` is a fresh credential handle that
    // nothing else references; `Cred` takes sole ownership and releases it
    // with gss_release_cred when its last clone drops.
    Ok(unsafe { Cred::from_c(cred) })
}

/// Why [`acquire_cred_from`] failed.
#[derive(Debug)]
pub(crate) enum AcquireError {
    /// An argument cannot be passed to C (it contains a NUL byte).
    Argument(String),
    /// GSSAPI refused.
    Gss(GssFailure),
}

/// A `gss_name_t` imported here and released on drop, because libgssapi's
/// `Name` does not expose its raw handle.
struct ImportedName(gss_name_t);

impl ImportedName {
    fn krb5_principal(principal: &str) -> Result<ImportedName, AcquireError> {
        if principal.contains('\0') {
            return Err(AcquireError::Argument(
                "principal name contains a NUL byte".into(),
            ));
        }
        let mut buf = gss_buffer_desc {
            length: principal.len(),
            value: principal.as_ptr() as *mut c_void,
        };
        let mut name_type = gss_OID_desc {
            length: KRB5_PRINCIPAL_NAME_OID.len() as u32,
            elements: KRB5_PRINCIPAL_NAME_OID.as_ptr() as *mut c_void,
        };
        let mut minor: OM_uint32 = GSS_S_COMPLETE;
        let mut name: gss_name_t = ptr::null_mut();
        // SAFETY: `buf` describes `principal`'s bytes (length-delimited, no NUL
        // needed), which gss_import_name only reads and copies; `name_type`
        // points at static OID bytes that are never written; `name` and
        // `minor` are valid out-pointers.
        let major = unsafe { gss_import_name(&mut minor, &mut buf, &mut name_type, &mut name) };
        if is_error(major) {
            return Err(AcquireError::Gss(GssFailure::from_gss(GssError {
                major: MajorFlags::from_bits_retain(major),
                minor,
            })));
        }
        Ok(ImportedName(name))
    }
}

impl Drop for ImportedName {
    fn drop(&mut self) {
        let mut minor: OM_uint32 = GSS_S_COMPLETE;
        // SAFETY: `self.0` was returned by a successful gss_import_name and is
        // released exactly once, here; gss_release_name also nulls it.
        unsafe {
            gss_release_name(&mut minor, &mut self.0);
        }
    }
}

/// True when a major status carries a calling or routine error (supplementary
/// bits such as CONTINUE_NEEDED alone are not failures).
fn is_error(major: OM_uint32) -> bool {
    major & 0xffff_0000 != 0
}

fn cstring(s: &str) -> Result<CString, AcquireError> {
    CString::new(s)
        .map_err(|_| AcquireError::Argument("credential store entry contains a NUL byte".into()))
}
