//! hyper's own error answers, given the form of every other podstore error.
//!
//! hyper answers a request it can't parse by itself, before any handler runs: headers beyond
//! `limits.headers_max` or `limits.header_bytes_max` get `431`, a request line too long `414`,
//! a malformed one `400`. It writes a bare head (no `Server`, no body) and closes the
//! connection, and has no hook to change that answer. API.md wants `Server` and a JSON body on
//! every error, so the connection's writer replaces that head by the full answer.
//!
//! To replace only that head, never a body's bytes that happen to look like one, the writer
//! follows the framing of what hyper writes ([`Framing`]): a head, then as many body bytes as
//! its `content-length` says (none for `HEAD` requests, 1xx, 204 and 304). hyper serves one
//! request at a time per connection, so the request being answered is the last one handed to
//! the service. A head written at a head's place that lacks the `server:` header every
//! handler's answer carries is hyper's own. Anything the framing can't follow (a head without
//! a length, one too long) stops all replacing on that connection: bytes pass unchanged.

/// The longest head followed; a longer one stops replacing on the connection.
const HEAD_BYTES_MAX: usize = 64 << 10;

/// Where the next byte hyper writes falls.
#[derive(Debug)]
enum Place {
    /// In a head, whose bytes so far are kept (to find its end and its length).
    Head(Vec<u8>),
    /// In a body, with this many bytes of it still to come.
    Body(u64),
    /// Lost track: nothing is replaced on this connection any more.
    Lost,
}

impl Place {
    /// Where the bytes after a head go, given its body's length (None: unknown).
    fn after_head(body: Option<u64>) -> Place {
        match body {
            Some(0) => Place::Head(Vec::new()),
            Some(n) => Place::Body(n),
            None => Place::Lost,
        }
    }
}

/// The framing of one connection's answers, as hyper writes them.
#[derive(Debug)]
pub(crate) struct Framing {
    place: Place,
    /// The `Server` header's value for the answers written in hyper's place.
    server: &'static str,
}

impl Framing {
    /// A connection's framing, before its first answer.
    pub(crate) fn new(server: &'static str) -> Framing {
        Framing { place: Place::Head(Vec::new()), server }
    }

    /// Follows nothing more (the connection is closing after a replaced answer).
    pub(crate) fn stop(&mut self) {
        self.place = Place::Lost;
    }

    /// The answer to write instead of `first`, the first bytes hyper writes now, when they are
    /// hyper's own bare error head at a head's place.
    pub(crate) fn replacement(&self, first: &[u8]) -> Option<Vec<u8>> {
        match &self.place {
            Place::Head(seen) if seen.is_empty() => parse_error_answer(first, self.server),
            _ => None,
        }
    }

    /// Follows `written`, bytes hyper's writes put on the wire, in order; `head_request` says
    /// whether the request being answered is a HEAD.
    pub(crate) fn advance(&mut self, mut written: &[u8], head_request: bool) {
        while !written.is_empty() {
            // The usual case, a whole head in one write: no copy of it.
            if matches!(&self.place, Place::Head(seen) if seen.is_empty()) {
                if let Some(head_end) = head_in(written) {
                    self.place = Place::after_head(body_bytes(&written[..head_end], head_request));
                    written = &written[head_end..];
                    continue;
                }
            }
            match &mut self.place {
                Place::Lost => return,
                Place::Body(left) => {
                    let n = (*left).min(written.len() as u64);
                    *left -= n;
                    written = &written[n as usize..];
                    if *left == 0 {
                        self.place = Place::Head(Vec::new());
                    }
                }
                Place::Head(seen) => {
                    // The end of the head may straddle two writes: look from 3 bytes back.
                    let from = seen.len().saturating_sub(3);
                    let take = written.len().min(HEAD_BYTES_MAX + 4 - seen.len());
                    seen.extend_from_slice(&written[..take]);
                    written = &written[take..];
                    let Some(end) = seen[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                        if seen.len() > HEAD_BYTES_MAX {
                            self.place = Place::Lost;
                        }
                        continue;
                    };
                    let head_end = from + end + 4;
                    // Bytes after the head's end are the body's: give them back.
                    let body = body_bytes(&seen[..head_end], head_request);
                    let rest = seen.split_off(head_end);
                    self.place = Place::after_head(body);
                    if !rest.is_empty() {
                        self.advance(&rest, head_request);
                    }
                }
            }
        }
    }
}

/// The length of the head at the start of `written` (with its final blank line), if all of it
/// is there and it is no longer than a followed head may be.
fn head_in(written: &[u8]) -> Option<usize> {
    let window = &written[..written.len().min(HEAD_BYTES_MAX + 4)];
    memchr::memmem::find(window, b"\r\n\r\n").map(|end| end + 4)
}

/// How many body bytes follow `head` (with its final blank line); None when it can't be told.
fn body_bytes(head: &[u8], head_request: bool) -> Option<u64> {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let code = lines.next()?.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    if head_request || code < 200 || code == 204 || code == 304 {
        return Some(0);
    }
    let mut length = None;
    for l in lines {
        let (name, value) = match memchr::memchr(b':', l) {
            Some(i) => (&l[..i], &l[i + 1..]),
            None => (l, &[][..]),
        };
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            length = Some(std::str::from_utf8(value).ok()?.trim().parse().ok()?);
        }
    }
    length
}

/// The full answer for hyper's bare error head at the start of `first`, if that is what it is:
/// hyper's status line and `date` kept, `Server`, a JSON body, and `connection: close`.
fn parse_error_answer(first: &[u8], server: &str) -> Option<Vec<u8>> {
    if !first.starts_with(b"HTTP/1.1 4") && !first.starts_with(b"HTTP/1.1 5") {
        return None;
    }
    let window = &first[..first.len().min(1024)];
    let head_end = window.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&first[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line.get(9..12)?;
    let headers: Vec<&str> = lines.collect();
    let named = |n: &str| headers.iter().any(|l| l.get(..n.len()).is_some_and(|h| h.eq_ignore_ascii_case(n)));
    if named("server:") {
        return None;
    }
    let (error, message) = match code {
        "431" => (
            "header_too_large",
            "the request's headers exceed the node's limits (limits.headers_max, limits.header_bytes_max)",
        ),
        "414" => {
            ("uri_too_long", "the request line exceeds the node's header limit (limits.header_bytes_max)")
        }
        _ => ("bad_request", "the request is not valid HTTP/1.1"),
    };
    metrics::counter!("podstore_http_unparsable_requests_total", "status" => code.to_string()).increment(1);
    let body = serde_json::json!({ "error": error, "message": message }).to_string();
    let mut out = format!("{status_line}\r\nserver: {server}\r\n");
    for date in headers.iter().filter(|l| l.get(..5).is_some_and(|h| h.eq_ignore_ascii_case("date:"))) {
        out.push_str(date);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "podstore/test";

    const BARE_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 06 Dec 2026 20:00:00 GMT\r\n\r\n";

    #[test]
    fn hyper_s_bare_error_head_gets_server_and_a_json_body() {
        let f = Framing::new(SERVER);
        let out = String::from_utf8(f.replacement(BARE_431).expect("replaced")).expect("utf8");
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{out}");
        assert!(out.contains(&format!("\r\nserver: {SERVER}\r\n")), "{out}");
        assert!(out.contains("\r\ndate: Sun, 06 Dec 2026 20:00:00 GMT\r\n"), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{out}");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"], "header_too_large");
        // A handler's answer has the server header: left alone.
        let ours = format!("HTTP/1.1 404 Not Found\r\nserver: {SERVER}\r\ncontent-length: 0\r\n\r\n");
        assert!(f.replacement(ours.as_bytes()).is_none());
        assert!(f.replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[test]
    fn a_body_that_looks_like_an_error_head_is_never_replaced() {
        // A GET whose body is exactly hyper's bare 431 head, written head first, then body.
        let head =
            format!("HTTP/1.1 200 OK\r\nserver: {SERVER}\r\ncontent-length: {}\r\n\r\n", BARE_431.len() * 2);
        let mut f = Framing::new(SERVER);
        assert!(f.replacement(head.as_bytes()).is_none());
        // Written in pieces, the head's end straddling two writes.
        let (a, b) = head.as_bytes().split_at(head.len() - 2);
        f.advance(a, false);
        f.advance(b, false);
        for _ in 0..2 {
            assert!(f.replacement(BARE_431).is_none(), "body bytes replaced");
            f.advance(BARE_431, false);
        }
        // After the body, the next head's place: hyper's own error head there is replaced.
        assert!(f.replacement(BARE_431).is_some());
        // A HEAD request's answer has a content-length and no body.
        let mut f = Framing::new(SERVER);
        f.advance(head.as_bytes(), true);
        assert!(f.replacement(BARE_431).is_some());
        // 304 likewise; a head and body in one write are followed too.
        let mut f = Framing::new(SERVER);
        let both = format!("HTTP/1.1 304 Not Modified\r\nserver: x\r\ncontent-length: 9\r\n\r\n{head}0123");
        f.advance(both.as_bytes(), false);
        assert!(f.replacement(BARE_431).is_none(), "inside the second answer's body");
        f.advance(&BARE_431[..BARE_431.len() * 2 - 4 - BARE_431.len()], false);
        f.advance(BARE_431, false);
        assert!(f.replacement(BARE_431).is_some());
    }

    #[test]
    fn framing_it_cannot_follow_stops_all_replacing() {
        for head in [
            "HTTP/1.1 200 OK\r\nserver: x\r\ntransfer-encoding: chunked\r\n\r\n".to_string(),
            "HTTP/1.1 200 OK\r\nserver: x\r\n\r\n".to_string(),
            format!("HTTP/1.1 200 OK\r\nserver: x\r\nx-long: {}\r\n\r\n", "v".repeat(HEAD_BYTES_MAX)),
        ] {
            let mut f = Framing::new(SERVER);
            f.advance(head.as_bytes(), false);
            assert!(f.replacement(BARE_431).is_none(), "{:.60}", head);
        }
    }
}
