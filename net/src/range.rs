//! `Range: bytes=...` for one range (API.md): `a-b`, `a-`, `-n`. Several ranges get the whole
//! body; a malformed header is ignored (RFC 9110 allows both).

/// What a Range header asks of an object of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No usable range: send the whole object (200).
    Whole,
    /// Bytes `start..end` (end exclusive): 206.
    Part { start: u64, end: u64 },
    /// The range starts past the end: 416.
    Unsatisfiable,
}

/// Resolves a Range header value against an object of `len` bytes.
pub fn resolve(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(h) = header else { return RangeAnswer::Whole };
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return RangeAnswer::Whole };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeAnswer::Whole };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(_) if len == 0 => RangeAnswer::Unsatisfiable,
            Some(n) => RangeAnswer::Part { start: len.saturating_sub(n), end: len },
            None => RangeAnswer::Whole,
        },
        (s, "") => match num(s) {
            Some(s) if s >= len => RangeAnswer::Unsatisfiable,
            Some(s) => RangeAnswer::Part { start: s, end: len },
            None => RangeAnswer::Whole,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s > e => RangeAnswer::Whole,
            (Some(s), Some(_)) if s >= len => RangeAnswer::Unsatisfiable,
            (Some(s), Some(e)) => RangeAnswer::Part { start: s, end: e.saturating_add(1).min(len) },
            _ => RangeAnswer::Whole,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAnswer::*;

    #[test]
    fn ranges_follow_the_api() {
        assert_eq!(resolve(None, 10), Whole);
        assert_eq!(resolve(Some("bytes=0-4"), 10), Part { start: 0, end: 5 });
        assert_eq!(resolve(Some("bytes=5-"), 10), Part { start: 5, end: 10 });
        assert_eq!(resolve(Some("bytes=-3"), 10), Part { start: 7, end: 10 });
        assert_eq!(resolve(Some("bytes=-30"), 10), Part { start: 0, end: 10 });
        assert_eq!(resolve(Some("bytes=8-100"), 10), Part { start: 8, end: 10 });
        assert_eq!(resolve(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=10-12"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(resolve(Some("bytes=0-1,4-5"), 10), Whole);
        assert_eq!(resolve(Some("bytes=5-2"), 10), Whole);
        assert_eq!(resolve(Some("items=0-1"), 10), Whole);
        assert_eq!(resolve(Some("bytes=x-1"), 10), Whole);
        assert_eq!(resolve(Some("bytes=+1-2"), 10), Whole);
        assert_eq!(resolve(Some("bytes=99999999999999999999999-"), 10), Whole);
    }
}
