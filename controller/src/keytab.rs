//! Keytab bytes, as MIT's `ktadd` writes them.
//!
//! kcred never writes key material itself: kadmind's own keytab writer
//! produces each principal's keytab. This module only walks the documented
//! container (MIT `keytab_file_format.txt`, version 0x502: a 2-byte header,
//! then length-prefixed entries) to check that what came back is whole, to
//! read which kvnos it holds, and to concatenate several principals' entries
//! into the one `krb5.keytab` a pod receives. For Active Directory, where
//! keys are derived under the account's name (see `crate::ad`), it also
//! re-labels entries with a service principal name and drops the entries
//! of key versions whose grace period is over.

use std::collections::BTreeSet;
use std::fmt;

use zeroize::Zeroizing;

const HEADER: [u8; 2] = [0x05, 0x02];

/// Why bytes are not a usable keytab.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeytabError {
    /// Not a version 0x502 keytab.
    #[error("not an MIT keytab (version 0x502 header missing)")]
    BadHeader,
    /// An entry runs past the end, or its fields do not fit it.
    #[error("keytab is truncated or malformed at byte {0}")]
    Malformed(usize),
    /// The keytab holds no key.
    #[error("keytab holds no keys")]
    Empty,
}

/// A validated keytab. Zeroized on drop, never printed.
#[derive(Clone)]
pub struct Keytab {
    bytes: Zeroizing<Vec<u8>>,
    kvnos: BTreeSet<u32>,
}

impl fmt::Debug for Keytab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keytab")
            .field("len", &self.bytes.len())
            .field("kvnos", &self.kvnos)
            .finish()
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], KeytabError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(KeytabError::Malformed(self.pos))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(KeytabError::Malformed(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, KeytabError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, KeytabError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, KeytabError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn counted(&mut self) -> Result<(), KeytabError> {
        let n = self.u16()? as usize;
        self.take(n).map(|_| ())
    }
}

/// One live entry: its body, where the principal name ends, its kvno.
struct Entry<'a> {
    body: &'a [u8],
    after_name: usize,
    kvno: u32,
}

impl<'a> Entry<'a> {
    fn read(body: &'a [u8], offset: usize) -> Result<Self, KeytabError> {
        let mut r = Reader { buf: body, pos: 0 };
        let malformed = |_| KeytabError::Malformed(offset);
        let components = r.u16().map_err(malformed)?;
        r.counted().map_err(malformed)?; // realm
        for _ in 0..components {
            r.counted().map_err(malformed)?;
        }
        Ok(Entry {
            body,
            after_name: r.pos,
            kvno: entry_kvno(body, offset)?,
        })
    }
}

/// Returns the kvno of one entry's body.
fn entry_kvno(body: &[u8], offset: usize) -> Result<u32, KeytabError> {
    let mut r = Reader { buf: body, pos: 0 };
    let malformed = |_| KeytabError::Malformed(offset);
    let components = r.u16().map_err(malformed)?;
    r.counted().map_err(malformed)?; // realm
    for _ in 0..components {
        r.counted().map_err(malformed)?;
    }
    r.u32().map_err(malformed)?; // name type
    r.u32().map_err(malformed)?; // timestamp
    let vno8 = r.u8().map_err(malformed)?;
    r.u16().map_err(malformed)?; // enctype
    r.counted().map_err(malformed)?; // key
    // A 32-bit kvno follows when the entry has room for it; it wins if set.
    if body.len() - r.pos >= 4 {
        let vno32 = r.u32().map_err(malformed)?;
        if vno32 != 0 {
            return Ok(vno32);
        }
    }
    Ok(u32::from(vno8))
}

impl Keytab {
    /// Validates bytes written by MIT Kerberos.
    pub fn parse(bytes: Zeroizing<Vec<u8>>) -> Result<Self, KeytabError> {
        if bytes.get(..2) != Some(&HEADER[..]) {
            return Err(KeytabError::BadHeader);
        }
        let mut kvnos = BTreeSet::new();
        let mut pos = 2;
        while pos < bytes.len() {
            let len_bytes = bytes.get(pos..pos + 4).ok_or(KeytabError::Malformed(pos))?;
            let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            let size = len.unsigned_abs() as usize;
            let body = bytes
                .get(pos + 4..pos + 4 + size)
                .ok_or(KeytabError::Malformed(pos))?;
            if len > 0 {
                kvnos.insert(entry_kvno(body, pos)?);
            }
            // A negative length marks a hole left by a deleted entry.
            pos += 4 + size;
        }
        if kvnos.is_empty() {
            return Err(KeytabError::Empty);
        }
        Ok(Keytab { bytes, kvnos })
    }

    /// Concatenates the entries of several keytabs into one.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a Keytab>) -> Result<Keytab, KeytabError> {
        let mut out = Zeroizing::new(HEADER.to_vec());
        let mut kvnos = BTreeSet::new();
        for k in parts {
            out.extend_from_slice(&k.bytes[2..]);
            kvnos.extend(k.kvnos.iter().copied());
        }
        if kvnos.is_empty() {
            return Err(KeytabError::Empty);
        }
        Ok(Keytab { bytes: out, kvnos })
    }

    /// The same keys under another principal name (`components@realm`,
    /// name type `KRB5_NT_PRINCIPAL`): an AD account's keys serve each of
    /// its service principal names.
    pub fn renamed(&self, realm: &str, components: &[&str]) -> Result<Keytab, KeytabError> {
        let mut name = Vec::new();
        let count = u16::try_from(components.len()).map_err(|_| KeytabError::Malformed(0))?;
        name.extend_from_slice(&count.to_be_bytes());
        for part in std::iter::once(realm).chain(components.iter().copied()) {
            let len = u16::try_from(part.len()).map_err(|_| KeytabError::Malformed(0))?;
            name.extend_from_slice(&len.to_be_bytes());
            name.extend_from_slice(part.as_bytes());
        }
        self.rebuild(|entry| {
            let mut body = name.clone();
            body.extend_from_slice(&entry.body[entry.after_name..]);
            Some(body)
        })
    }

    /// Only the entries whose kvno `keep` accepts: ends an AD rotation's
    /// grace period, where the directory itself keeps no old keys.
    pub fn retain_kvnos(&self, keep: impl Fn(u32) -> bool) -> Result<Keytab, KeytabError> {
        self.rebuild(|entry| keep(entry.kvno).then(|| entry.body.to_vec()))
    }

    /// A new keytab from each live entry mapped through `f` (`None` drops it).
    fn rebuild(&self, f: impl Fn(&Entry<'_>) -> Option<Vec<u8>>) -> Result<Keytab, KeytabError> {
        let mut out = Zeroizing::new(HEADER.to_vec());
        let mut pos = 2;
        while pos < self.bytes.len() {
            let len_bytes = self
                .bytes
                .get(pos..pos + 4)
                .ok_or(KeytabError::Malformed(pos))?;
            let len = i32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
            let size = len.unsigned_abs() as usize;
            let body = self
                .bytes
                .get(pos + 4..pos + 4 + size)
                .ok_or(KeytabError::Malformed(pos))?;
            if len > 0 {
                let entry = Entry::read(body, pos)?;
                if let Some(new_body) = f(&entry).map(Zeroizing::new) {
                    let n =
                        i32::try_from(new_body.len()).map_err(|_| KeytabError::Malformed(pos))?;
                    out.extend_from_slice(&n.to_be_bytes());
                    out.extend_from_slice(&new_body);
                }
            }
            pos += 4 + size;
        }
        Keytab::parse(out)
    }

    /// The key versions this keytab holds.
    pub fn kvnos(&self) -> &BTreeSet<u32> {
        &self.kvnos
    }

    /// The raw bytes, for sealing and delivery only.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One entry as MIT writes it: principal a/b@R, kvno 3, enctype 18.
    fn entry(kvno: u8, with_vno32: Option<u32>) -> Vec<u8> {
        let mut body = vec![
            0, 2, 0, 1, b'R', 0, 1, b'a', 0, 1, b'b', 0, 0, 0, 1, 0, 0, 0, 0, kvno,
        ];
        body.extend_from_slice(&[0, 18, 0, 4, 1, 2, 3, 4]);
        if let Some(v) = with_vno32 {
            body.extend_from_slice(&v.to_be_bytes());
        }
        let mut e = (body.len() as i32).to_be_bytes().to_vec();
        e.extend(body);
        e
    }

    #[test]
    fn parse_reads_kvnos_and_skips_holes() {
        let mut b = HEADER.to_vec();
        b.extend(entry(3, None));
        b.extend((-8i32).to_be_bytes());
        b.extend([0u8; 8]);
        b.extend(entry(4, Some(300)));
        let k = Keytab::parse(Zeroizing::new(b)).expect("valid");
        assert_eq!(k.kvnos().iter().copied().collect::<Vec<_>>(), vec![3, 300]);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused() {
        let mut b = HEADER.to_vec();
        b.extend(entry(3, None));
        b.truncate(b.len() - 1);
        assert!(matches!(
            Keytab::parse(Zeroizing::new(b)),
            Err(KeytabError::Malformed(_))
        ));
        assert_eq!(
            Keytab::parse(Zeroizing::new(vec![5, 1])).unwrap_err(),
            KeytabError::BadHeader
        );
        assert_eq!(
            Keytab::parse(Zeroizing::new(HEADER.to_vec())).unwrap_err(),
            KeytabError::Empty
        );
    }

    proptest::proptest! {
        /// Generated keytabs: a keytab with at least one kvno, or a
        /// `KeytabError`, never a panic.
        #[test]
        fn fuzz_keytab_reader(bytes in crate::fuzz::bytes_near(vec![
            [HEADER.to_vec(), entry(3, None)].concat(),
            [HEADER.to_vec(), entry(3, None), entry(4, Some(300))].concat(),
        ])) {
            match Keytab::parse(Zeroizing::new(bytes)) {
                Ok(k) => proptest::prop_assert!(!k.kvnos().is_empty()),
                Err(KeytabError::BadHeader | KeytabError::Malformed(_) | KeytabError::Empty) => {}
            }
        }
    }

    #[test]
    fn renamed_keeps_keys_and_kvnos_under_the_new_name() {
        let mut b = HEADER.to_vec();
        b.extend(entry(3, None));
        b.extend(entry(4, Some(300)));
        let k = Keytab::parse(Zeroizing::new(b)).expect("valid");
        let r = k
            .renamed("AD.TEST", &["HTTP", "web.example"])
            .expect("renamed");
        assert_eq!(r.kvnos(), k.kvnos());
        let bytes = r.bytes();
        let name = b"\x00\x07AD.TEST\x00\x04HTTP\x00\x0bweb.example";
        assert_eq!(bytes.windows(name.len()).filter(|w| w == name).count(), 2);
        assert_eq!(
            bytes.windows(4).filter(|w| w == &[0, 4, 1, 2]).count(),
            2,
            "keys kept"
        );
    }

    #[test]
    fn retain_kvnos_drops_old_versions_and_refuses_to_drop_all() {
        let mut b = HEADER.to_vec();
        b.extend(entry(3, None));
        b.extend(entry(4, None));
        let k = Keytab::parse(Zeroizing::new(b)).expect("valid");
        let kept = k.retain_kvnos(|v| v >= 4).expect("kept");
        assert_eq!(kept.kvnos().iter().copied().collect::<Vec<_>>(), vec![4]);
        assert_eq!(k.retain_kvnos(|_| false).unwrap_err(), KeytabError::Empty);
    }

    #[test]
    fn merge_concatenates_entries_under_one_header() {
        let mut a = HEADER.to_vec();
        a.extend(entry(1, None));
        let mut b = HEADER.to_vec();
        b.extend(entry(2, None));
        let (ka, kb) = (
            Keytab::parse(Zeroizing::new(a.clone())).expect("a"),
            Keytab::parse(Zeroizing::new(b.clone())).expect("b"),
        );
        let m = Keytab::merge([&ka, &kb]).expect("merge");
        assert_eq!(m.bytes().len(), a.len() + b.len() - 2);
        let reparsed = Keytab::parse(Zeroizing::new(m.bytes().to_vec())).expect("reparse");
        assert_eq!(reparsed.kvnos().len(), 2);
        assert!(!format!("{m:?}").contains("[1, 2, 3, 4]"));
    }
}
