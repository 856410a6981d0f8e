//! RFC 3261 §25 lexical pieces: tokens, LWS, quoted strings, parameters, URIs, name-addr and
//! Via values. Functions take a header value already unfolded (folds replaced by a space) and
//! return `Err(())` for a malformed value; the caller attaches the offset and header name.

pub(crate) type Lex<T> = Result<T, ()>;

/// `;name[=value]` parameters in the order sent.
pub type Params<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

pub(crate) fn is_lws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_lws(*b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_lws(*b)).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// Trims SP, HTAB, CR and LF (a folded value's ends).
pub(crate) fn trim_all(s: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// Call-ID = word [ "@" word ] (RFC 3261 §25.1).
pub(crate) fn call_id_ok(s: &[u8]) -> bool {
    let word = |w: &[u8]| {
        !w.is_empty()
            && w.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~()<>:\\\"/[]?{}".contains(b))
    };
    let mut parts = s.splitn(2, |b| *b == b'@');
    let first = parts.next().unwrap_or_default();
    word(first) && parts.next().is_none_or(word)
}

pub(crate) fn all_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|b| is_token(*b))
}

/// Length of the quoted string at the start of `s` (which starts with '"'), quotes included.
pub(crate) fn quoted_len(s: &[u8]) -> Lex<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(())
}

/// Splits a list value at commas outside quoted strings and angle brackets. An empty element
/// (",," or a trailing comma) is an error.
pub(crate) fn split_list(s: &[u8]) -> Lex<Vec<&[u8]>> {
    let mut out = Vec::new();
    let (mut i, mut start, mut angle) = (0usize, 0usize, false);
    while i < s.len() {
        match s[i] {
            b'"' if !angle => {
                i += quoted_len(&s[i..])?;
                continue;
            }
            b'<' => angle = true,
            b'>' => angle = false,
            b',' if !angle => {
                let el = trim(&s[start..i]);
                if el.is_empty() {
                    return Err(());
                }
                out.push(el);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if angle {
        return Err(());
    }
    let el = trim(&s[start..]);
    if el.is_empty() {
        return Err(());
    }
    out.push(el);
    Ok(out)
}

/// `*( SEMI generic-param )` with optional LWS around ';' and '='; values are tokens, hosts
/// or quoted strings. Returns (name, value) pairs. Empty names (";;") are errors.
pub(crate) fn params(mut s: &[u8]) -> Lex<Params<'_>> {
    let mut out = Vec::new();
    loop {
        s = trim(s);
        if s.is_empty() {
            return Ok(out);
        }
        if s[0] != b';' {
            return Err(());
        }
        s = trim(&s[1..]);
        let name_len = s.iter().take_while(|b| is_token(**b)).count();
        if name_len == 0 {
            return Err(());
        }
        let name = &s[..name_len];
        s = trim(&s[name_len..]);
        let mut value = None;
        if s.first() == Some(&b'=') {
            s = trim(&s[1..]);
            let vlen = if s.first() == Some(&b'"') {
                quoted_len(s)?
            } else {
                s.iter()
                    .take_while(|b| is_token(**b) || b"[]:".contains(b))
                    .count()
            };
            if vlen == 0 {
                return Err(());
            }
            value = Some(&s[..vlen]);
            s = &s[vlen..];
        }
        // A parameter given twice (two tags, two branches) would be read differently by
        // different stacks: refuse it.
        if out
            .iter()
            .any(|(n, _): &(&[u8], Option<&[u8]>)| n.eq_ignore_ascii_case(name))
        {
            return Err(());
        }
        out.push((name, value));
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Checks `%HH` escapes and that every byte is in `ok` (or an escape).
fn escaped_chars(s: &[u8], ok: impl Fn(u8) -> bool) -> Lex<()> {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if i + 2 >= s.len() || !is_hex(s[i + 1]) || !is_hex(s[i + 2]) {
                return Err(());
            }
            i += 3;
        } else if ok(s[i]) {
            i += 1;
        } else {
            return Err(());
        }
    }
    Ok(())
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)
}

/// A parsed URI: SIP/SIPS in detail, any other scheme as an opaque absolute URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: &'a str,
    /// For SIP/SIPS: the user part (escaped form), host, port, whether it has `?headers`.
    pub user: Option<&'a [u8]>,
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub has_headers: bool,
    pub raw: &'a [u8],
}

impl Uri<'_> {
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sip") || self.scheme.eq_ignore_ascii_case("sips")
    }
}

fn host_ok(h: &[u8]) -> bool {
    if h.first() == Some(&b'[') {
        // IPv6reference: the address must parse (no "[:]" or "[...]").
        return h.len() > 2
            && h.last() == Some(&b']')
            && std::str::from_utf8(&h[1..h.len() - 1])
                .ok()
                .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
                .is_some();
    }
    // hostname: labels of alphanumerics and inner hyphens, optionally ending with a dot.
    let name = h.strip_suffix(b".").unwrap_or(h);
    !name.is_empty()
        && name.split(|b| *b == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && !label.starts_with(b"-")
                && !label.ends_with(b"-")
        })
}

/// Parses a URI (RFC 3261 §19.1 for sip/sips, RFC 2396 absoluteURI for others).
pub(crate) fn uri(s: &[u8]) -> Lex<Uri<'_>> {
    let colon = s.iter().position(|b| *b == b':').ok_or(())?;
    let scheme = &s[..colon];
    if scheme.is_empty()
        || !scheme[0].is_ascii_alphabetic()
        || !scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
    {
        return Err(());
    }
    let scheme = core::str::from_utf8(scheme).map_err(|_| ())?;
    let rest = &s[colon + 1..];
    if rest.is_empty() {
        return Err(());
    }
    let sip = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
    if !sip {
        // absoluteURI: uric characters only (no space, no <>, no quote).
        escaped_chars(rest, |b| {
            b.is_ascii_alphanumeric() || b"-_.!~*'();/?:@&=+$,#[]".contains(&b)
        })?;
        return Ok(Uri {
            scheme,
            user: None,
            host: b"",
            port: None,
            has_headers: false,
            raw: s,
        });
    }
    // Userinfo runs to the last '@' (it may hold ';', '?', '/' ...; '@' may not appear raw in
    // parameters or headers). After it: hostport, ";params", "?headers".
    let (user, after_user) = match rest.iter().rposition(|b| *b == b'@') {
        Some(at) => {
            let userinfo = &rest[..at];
            if userinfo.is_empty() {
                return Err(());
            }
            escaped_chars(userinfo, |b| unreserved(b) || b"&=+$,;?/:".contains(&b))?;
            (Some(userinfo), &rest[at + 1..])
        }
        None => (None, rest),
    };
    let (hostpart, has_headers) = match after_user.iter().position(|b| *b == b'?') {
        Some(q) => {
            escaped_chars(&after_user[q + 1..], |b| {
                unreserved(b) || b"[]/?:+$&=".contains(&b)
            })?;
            (&after_user[..q], true)
        }
        None => (after_user, false),
    };
    let hp_end = hostpart
        .iter()
        .position(|b| *b == b';')
        .unwrap_or(hostpart.len());
    let (hostport, uparams) = hostpart.split_at(hp_end);
    // URI parameters: ";name[=value]" with escapes, no LWS allowed inside a URI.
    for p in uparams.split(|b| *b == b';').skip(1) {
        if p.is_empty() || p[0] == b'=' {
            return Err(());
        }
        escaped_chars(p, |b| unreserved(b) || b"[]/:&+$=".contains(&b))?;
    }
    let (host, port) = if hostport.first() == Some(&b'[') {
        let close = hostport.iter().position(|b| *b == b']').ok_or(())?;
        let (h, after) = hostport.split_at(close + 1);
        match after {
            [] => (h, None),
            [b':', digits @ ..] => (h, Some(port_num(digits)?)),
            _ => return Err(()),
        }
    } else {
        match hostport.iter().position(|b| *b == b':') {
            Some(c) => (&hostport[..c], Some(port_num(&hostport[c + 1..])?)),
            None => (hostport, None),
        }
    };
    if !host_ok(host) {
        return Err(());
    }
    Ok(Uri {
        scheme,
        user,
        host,
        port,
        has_headers,
        raw: s,
    })
}

fn port_num(d: &[u8]) -> Lex<u16> {
    if d.is_empty() || d.len() > 5 || !d.iter().all(u8::is_ascii_digit) {
        return Err(());
    }
    match core::str::from_utf8(d).map_err(|_| ())?.parse::<u16>() {
        Ok(0) | Err(_) => Err(()),
        Ok(p) => Ok(p),
    }
}

/// `( name-addr / addr-spec ) *( SEMI param )` as in To, From, Contact, Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display: Option<&'a [u8]>,
    pub uri: Uri<'a>,
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// A parameter's value (e.g. `tag`), case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| *v)
    }
}

pub(crate) fn name_addr(s: &[u8]) -> Lex<NameAddr<'_>> {
    let s = trim(s);
    let lt = {
        // The '<' that opens the name-addr (outside a leading quoted display name).
        let mut i = 0;
        let mut found = None;
        while i < s.len() {
            match s[i] {
                b'"' => i += quoted_len(&s[i..])?,
                b'<' => {
                    found = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        found
    };
    match lt {
        Some(lt) => {
            let disp = trim(&s[..lt]);
            let display = if disp.is_empty() {
                None
            } else if disp[0] == b'"' {
                if quoted_len(disp)? != disp.len() {
                    return Err(());
                }
                Some(disp)
            } else {
                // *(token LWS): unquoted display names are tokens only.
                if !disp
                    .split(|b| is_lws(*b))
                    .filter(|t| !t.is_empty())
                    .all(all_token)
                {
                    return Err(());
                }
                Some(disp)
            };
            let gt = s[lt..].iter().position(|b| *b == b'>').ok_or(())? + lt;
            let inner = &s[lt + 1..gt];
            // LAQUOT addr-spec RAQUOT: no whitespace inside the brackets.
            if inner.is_empty() || is_lws(inner[0]) || is_lws(inner[inner.len() - 1]) {
                return Err(());
            }
            let uri = uri(inner)?;
            Ok(NameAddr {
                display,
                uri,
                params: params(&s[gt + 1..])?,
            })
        }
        None => {
            // addr-spec: the URI ends at the first ';'; it may not hold ',', '?' or ';'
            // (RFC 3261 §20: such URIs must be in angle brackets).
            let end = s.iter().position(|b| *b == b';').unwrap_or(s.len());
            let raw = trim(&s[..end]);
            if raw.iter().any(|b| b",?\"".contains(b) || is_lws(*b)) {
                return Err(());
            }
            let uri = uri(raw)?;
            Ok(NameAddr {
                display: None,
                uri,
                params: params(&s[end..])?,
            })
        }
    }
}

/// One Via value: sent-protocol, sent-by, parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a [u8],
    pub host: &'a [u8],
    pub port: Option<u16>,
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(b"branch"))
            .and_then(|(_, v)| *v)
    }
}

pub(crate) fn via(s: &[u8]) -> Lex<Via<'_>> {
    // protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS
    let mut rest = trim(s);
    let mut parts = [&b""[..]; 3];
    for (i, part) in parts.iter_mut().enumerate() {
        let n = rest.iter().take_while(|b| is_token(**b)).count();
        if n == 0 {
            return Err(());
        }
        *part = &rest[..n];
        rest = trim(&rest[n..]);
        if i < 2 {
            if rest.first() != Some(&b'/') {
                return Err(());
            }
            rest = trim(&rest[1..]);
        }
    }
    if !parts[0].eq_ignore_ascii_case(b"SIP") || parts[1] != b"2.0" {
        return Err(());
    }
    let end = rest.iter().position(|b| *b == b';').unwrap_or(rest.len());
    let sent_by = trim(&rest[..end]);
    let (host, port) = if sent_by.first() == Some(&b'[') {
        let close = sent_by.iter().position(|b| *b == b']').ok_or(())?;
        let after = trim(&sent_by[close + 1..]);
        let port = match after {
            [] => None,
            [b':', d @ ..] => Some(port_num(trim(d))?),
            _ => return Err(()),
        };
        (&sent_by[..=close], port)
    } else {
        match sent_by.iter().position(|b| *b == b':') {
            Some(c) => (
                trim(&sent_by[..c]),
                Some(port_num(trim(&sent_by[c + 1..]))?),
            ),
            None => (sent_by, None),
        }
    };
    if !host_ok(host) {
        return Err(());
    }
    Ok(Via {
        transport: parts[2],
        host,
        port,
        params: params(&rest[end..])?,
    })
}
