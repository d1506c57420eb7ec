//! A strict reader for the MIT FILE ccache, version 4 (0x0504), just deep
//! enough to find the TGT and its times and flags.
//!
//! Layout (MIT `doc/formats/ccache_file_format.rst`, checked against caches
//! written by MIT kinit 1.20 and `klist -f`): big-endian throughout; u16
//! version; u16 header length and tagged header fields (tag 1: KDC time
//! offset, i32 seconds + i32 microseconds); the default principal; then
//! credentials until end of file. A principal is u32 name type, u32 component
//! count, counted realm, counted components ("counted" = u32 length + bytes).
//! A credential is client, server, keyblock (u16 enctype + counted key),
//! u32 authtime/starttime/endtime/renew_till, u8 is_skey, u32 flags, u32-counted
//! addresses and authdata (u16 type + counted data each), counted ticket and
//! counted second ticket. Entries whose server realm is `X-CACHECONF:` are
//! configuration, not tickets. Any length that runs past the end is an error.

/// Ticket flags as MIT stores them (RFC 4120 bit 1 = 0x40000000, bit 8 =
/// 0x00800000); `klist -f` shows them as F and R.
pub(super) const FLAG_FORWARDABLE: u32 = 0x4000_0000;
pub(super) const FLAG_RENEWABLE: u32 = 0x0080_0000;

const VERSION_4: u16 = 0x0504;
const TAG_KDC_OFFSET: u16 = 1;
const CONFIG_REALM: &[u8] = b"X-CACHECONF:";

/// The cache's TGT, with times as the KDC wrote them (seconds since the
/// epoch, on the KDC's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tgt {
    pub client: String,
    pub start: u32,
    pub end: u32,
    pub renew_till: u32,
    pub flags: u32,
    /// KDC clock minus local clock, in microseconds, from the header.
    pub kdc_offset_micros: i64,
}

struct Principal<'a> {
    realm: &'a [u8],
    components: Vec<&'a [u8]>,
}

impl Principal<'_> {
    fn is_tgs_of(&self, realm: &[u8]) -> bool {
        self.realm == realm && self.components == [&b"krbtgt"[..], realm]
    }

    /// Formats like `krb5_unparse_name`, escaping separators.
    fn unparse(&self) -> String {
        fn push(out: &mut String, part: &[u8], specials: &[char]) {
            for c in String::from_utf8_lossy(part).chars() {
                match c {
                    '\0' => out.push_str("\\0"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    c if specials.contains(&c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
        }
        let mut out = String::new();
        for (i, c) in self.components.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            push(&mut out, c, &['/', '@', '\\']);
        }
        out.push('@');
        push(&mut out, self.realm, &['@', '\\']);
        out
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| format!("{what} at byte {} runs past the end", self.pos))?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn counted(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u32(what)?;
        let n = usize::try_from(n).map_err(|_| format!("{what} is too long"))?;
        self.take(n, what)
    }
    fn principal(&mut self) -> Result<Principal<'a>, String> {
        self.u32("principal name type")?;
        let count = self.u32("principal component count")?;
        let realm = self.counted("principal realm")?;
        // No preallocation: the count is untrusted, each read is bounded.
        let mut components = Vec::new();
        for _ in 0..count {
            components.push(self.counted("principal component")?);
        }
        Ok(Principal { realm, components })
    }
    fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }
}

/// Reads the header's KDC time offset (0 if absent).
fn header_offset(header: &[u8]) -> Result<i64, String> {
    let mut r = Reader {
        buf: header,
        pos: 0,
    };
    let mut offset = 0;
    while !r.at_end() {
        let tag = r.u16("header tag")?;
        let len = usize::from(r.u16("header field length")?);
        let value = r.take(len, "header field")?;
        if tag == TAG_KDC_OFFSET {
            let [s0, s1, s2, s3, u0, u1, u2, u3] = value else {
                return Err(format!("KDC time offset field has length {len}, not 8"));
            };
            let secs = i32::from_be_bytes([*s0, *s1, *s2, *s3]);
            let usecs = i32::from_be_bytes([*u0, *u1, *u2, *u3]);
            offset = i64::from(secs) * 1_000_000 + i64::from(usecs);
        }
    }
    Ok(offset)
}

/// Parses a whole cache and returns the default principal's local TGT
/// (`krbtgt/R@R`, R = the client's realm); the latest-ending one if several.
pub(super) fn parse_tgt(buf: &[u8]) -> Result<Tgt, String> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u16("version")?;
    if version != VERSION_4 {
        return Err(format!("ccache version {version:#06x} is not 0x0504"));
    }
    let header_len = usize::from(r.u16("header length")?);
    let kdc_offset_micros = header_offset(r.take(header_len, "header")?)?;
    let default = r.principal()?;

    let mut best: Option<Tgt> = None;
    while !r.at_end() {
        let client = r.principal()?;
        let server = r.principal()?;
        r.u16("key enctype")?;
        r.counted("session key")?;
        let authtime = r.u32("authtime")?;
        let starttime = r.u32("starttime")?;
        let end = r.u32("endtime")?;
        let renew_till = r.u32("renew_till")?;
        r.u8("is_skey")?;
        let flags = r.u32("ticket flags")?;
        for _ in 0..r.u32("address count")? {
            r.u16("address type")?;
            r.counted("address")?;
        }
        for _ in 0..r.u32("authdata count")? {
            r.u16("authdata type")?;
            r.counted("authdata")?;
        }
        r.counted("ticket")?;
        r.counted("second ticket")?;

        let is_tgt = server.realm != CONFIG_REALM
            && client.realm == default.realm
            && client.components == default.components
            && server.is_tgs_of(default.realm);
        if is_tgt && best.as_ref().is_none_or(|b| end >= b.end) {
            best = Some(Tgt {
                client: client.unparse(),
                // MIT leaves starttime 0 when it equals authtime.
                start: if starttime == 0 { authtime } else { starttime },
                end,
                renew_till,
                flags,
                kdc_offset_micros,
            });
        }
    }
    best.ok_or_else(|| format!("no TGT for {} in the cache", default.unparse()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(out: &mut Vec<u8>, data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(data);
    }

    fn principal(out: &mut Vec<u8>, realm: &str, comps: &[&str]) {
        out.extend(1u32.to_be_bytes());
        out.extend((comps.len() as u32).to_be_bytes());
        counted(out, realm.as_bytes());
        for c in comps {
            counted(out, c.as_bytes());
        }
    }

    fn cred(out: &mut Vec<u8>, server: (&str, &[&str]), times: [u32; 4], flags: u32) {
        principal(out, "R", &["me"]);
        principal(out, server.0, server.1);
        out.extend(18u16.to_be_bytes());
        counted(out, &[7; 32]);
        for t in times {
            out.extend(t.to_be_bytes());
        }
        out.push(0);
        out.extend(flags.to_be_bytes());
        out.extend(1u32.to_be_bytes()); // one address
        out.extend(2u16.to_be_bytes());
        counted(out, &[127, 0, 0, 1]);
        out.extend(0u32.to_be_bytes()); // no authdata
        counted(out, b"ticket");
        counted(out, b"");
    }

    fn cache(offset: (i32, i32)) -> Vec<u8> {
        let mut b = vec![5, 4, 0, 12, 0, 1, 0, 8];
        b.extend(offset.0.to_be_bytes());
        b.extend(offset.1.to_be_bytes());
        principal(&mut b, "R", &["me"]);
        cred(
            &mut b,
            ("X-CACHECONF:", &["krb5_ccache_conf_data", "x"]),
            [0; 4],
            0,
        );
        cred(&mut b, ("R", &["HTTP", "web"]), [10, 10, 99, 99], 0);
        cred(
            &mut b,
            ("R", &["krbtgt", "R"]),
            [100, 0, 200, 300],
            0x40c1_0000,
        );
        b
    }

    #[test]
    fn finds_the_tgt_past_config_and_service_entries() {
        let tgt = parse_tgt(&cache((-2, -500_000))).expect("parse");
        assert_eq!(
            tgt,
            Tgt {
                client: "me@R".into(),
                start: 100,
                end: 200,
                renew_till: 300,
                flags: 0x40c1_0000,
                kdc_offset_micros: -2_500_000,
            }
        );
    }

    #[test]
    fn rejects_other_versions_missing_tgt_and_trailing_bytes() {
        let mut v3 = cache((0, 0));
        v3[1] = 3;
        assert!(parse_tgt(&v3).unwrap_err().contains("version"));
        let mut no_tgt = vec![5, 4, 0, 0];
        principal(&mut no_tgt, "R", &["me"]);
        assert!(parse_tgt(&no_tgt).unwrap_err().contains("no TGT for me@R"));
        let mut trailing = cache((0, 0));
        trailing.push(0);
        assert!(parse_tgt(&trailing).is_err());
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        let mut b = vec![5, 4, 0, 0];
        b.extend(1u32.to_be_bytes());
        b.extend(u32::MAX.to_be_bytes());
        counted(&mut b, b"R");
        assert!(parse_tgt(&b).is_err());
    }

    proptest::proptest! {
        /// Generated caches: an error (never a panic, never a huge
        /// allocation), or a TGT of the default principal.
        #[test]
        fn fuzz_ccache_reader(bytes in crate::fuzz::bytes_near(vec![cache((0, 0)), cache((-2, 5))])) {
            match parse_tgt(&bytes) {
                Ok(tgt) => proptest::prop_assert!(tgt.client.contains('@')),
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
        }
    }

    #[test]
    fn unparse_escapes_separators() {
        let p = Principal {
            realm: b"R@X",
            components: vec![b"a/b", b"c@d\\"],
        };
        assert_eq!(p.unparse(), r"a\/b/c\@d\\@R\@X");
    }
}
