//! aws-chunked request bodies, as current AWS SDKs and minio-go send them: the object's bytes
//! in chunks `<hex size>[;chunk-signature=<sig>]\r\n<data>\r\n`, an empty last chunk, then
//! trailing headers (a checksum) and an empty line.
//!
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: every chunk signed (`sigv4::ChunkSigner`); a
//!   chunk's bytes go on only once its signature holds.
//! - `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: unsigned chunks, a checksum trailer
//!   (`x-amz-trailer` names it).
//! - `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: both, the trailer signed too.
//!
//! The decoder hands the object service the decoded bytes, and holds back the last of them
//! until the end of the body (the last chunk's signature, the trailer's checksum and its
//! signature) is checked: the service stops reading once it has the decoded length, so a
//! mismatch found after it would come too late to keep the object from being stored. What
//! went wrong is kept for the S3 answer (`Outcome`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use hyper::StatusCode;
use sha2::{Digest, Sha256};

use super::error::S3Error;
use super::sigv4::{same_signature, ChunkSigner};
use crate::checks::{Algorithm, Check, Hasher};
use crate::service::BodySource;

/// Longest chunk header or trailer line.
const LINE_MAX_BYTES: usize = 4096;
/// Largest signed chunk (held whole until its signature is checked).
const SIGNED_CHUNK_MAX_BYTES: u64 = 16 << 20;
/// Most trailer lines.
const TRAILER_LINES_MAX: usize = 8;

/// How a body is encoded, from `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Streaming {
    Signed,
    SignedTrailer,
    UnsignedTrailer,
}

impl Streaming {
    /// The encoding a payload hash names (None: not aws-chunked).
    pub(super) fn of(payload: &str) -> Result<Option<Streaming>, S3Error> {
        Ok(Some(match payload {
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Streaming::Signed,
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Streaming::SignedTrailer,
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Streaming::UnsignedTrailer,
            p if p.starts_with("STREAMING-") => {
                return Err(S3Error::not_implemented(&format!("x-amz-content-sha256: {p}")))
            }
            _ => return Ok(None),
        }))
    }

    pub(super) fn signed(self) -> bool {
        self != Streaming::UnsignedTrailer
    }

    fn trailer(self) -> bool {
        self != Streaming::Signed
    }
}

/// What decoding found, for the answer: the error that stopped it, or the trailer checksum
/// that held (its header and base64 value).
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub failure: Option<S3Error>,
    pub checked: Option<(&'static str, String)>,
}

/// The trailer's checksum being computed: its algorithm and header name.
struct TrailerSum {
    algorithm: Algorithm,
    header: &'static str,
    hasher: Hasher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A chunk header line is next.
    Header,
    /// `left` bytes of the current chunk's data are next.
    Data {
        left: u64,
    },
    /// The `\r\n` after a chunk's data.
    DataEnd,
    /// Trailer lines, up to an empty one.
    Trailer,
    Done,
}

/// An aws-chunked body decoded.
pub(super) struct ChunkedBody<B> {
    inner: B,
    mode: Streaming,
    /// Checks chunk and trailer signatures (None: no access keys are configured, so none is
    /// checked, as for the request's own).
    signer: Option<ChunkSigner>,
    trailer: Option<TrailerSum>,
    buf: BytesMut,
    state: State,
    /// The current signed chunk: its data so far, its signature.
    chunk: BytesMut,
    chunk_sig: Vec<u8>,
    trailer_lines: Vec<u8>,
    trailer_count: usize,
    trailer_signed: bool,
    /// The chunk being read is the empty last one.
    last: bool,
    /// Decoded bytes not handed on yet, and how many were.
    ready: VecDeque<Bytes>,
    handed: u64,
    decoded_len: u64,
    decoded: u64,
    outcome: Rc<RefCell<Outcome>>,
}

/// An encoding error: the body is not what its headers said.
fn incomplete(why: impl Into<String>) -> S3Error {
    S3Error::new(StatusCode::BAD_REQUEST, "IncompleteBody", why)
}

impl<B: BodySource> ChunkedBody<B> {
    /// `trailer`: the checksum header `x-amz-trailer` names (a `-TRAILER` mode needs one).
    pub(super) fn new(
        inner: B,
        mode: Streaming,
        signer: Option<ChunkSigner>,
        trailer: Option<&str>,
        decoded_len: u64,
    ) -> Result<(ChunkedBody<B>, Rc<RefCell<Outcome>>), S3Error> {
        let trailer = match (mode.trailer(), trailer) {
            (true, Some(name)) => {
                let suffix = name.trim().strip_prefix("x-amz-checksum-");
                let algorithm = suffix.and_then(Algorithm::of_s3_checksum);
                let header = suffix.and_then(super::write::checksum_header);
                let (Some(algorithm), Some(header)) = (algorithm, header) else {
                    return Err(S3Error::invalid_argument(format!("unknown trailer {name}")));
                };
                Some(TrailerSum { algorithm, header, hasher: Hasher::new(algorithm) })
            }
            (true, None) => {
                return Err(S3Error::invalid_argument("x-amz-trailer is required with this payload"))
            }
            (false, Some(_)) => {
                return Err(S3Error::invalid_argument("x-amz-trailer needs a -TRAILER payload"))
            }
            (false, None) => None,
        };
        let outcome = Rc::new(RefCell::new(Outcome::default()));
        let body = ChunkedBody {
            inner,
            mode,
            signer: signer.filter(|_| mode.signed()),
            trailer,
            buf: BytesMut::new(),
            state: State::Header,
            chunk: BytesMut::new(),
            chunk_sig: Vec::new(),
            trailer_lines: Vec::new(),
            trailer_count: 0,
            trailer_signed: false,
            last: false,
            ready: VecDeque::new(),
            handed: 0,
            decoded_len,
            decoded: 0,
            outcome: outcome.clone(),
        };
        Ok((body, outcome))
    }

    fn fail(&mut self, e: S3Error) -> Option<Result<Bytes, String>> {
        let why = e.message.clone();
        self.outcome.borrow_mut().failure = Some(e);
        self.state = State::Done;
        self.ready.clear();
        Some(Err(why))
    }

    /// A line ending in `\r\n` from the buffer (without it), if whole.
    fn line(&mut self) -> Result<Option<Bytes>, S3Error> {
        match memchr::memchr(b'\n', &self.buf) {
            Some(at) if at <= LINE_MAX_BYTES => {
                let mut line = self.buf.split_to(at + 1).freeze();
                line.truncate(at);
                if line.last() == Some(&b'\r') {
                    line.truncate(at - 1);
                }
                Ok(Some(line))
            }
            Some(_) => Err(incomplete("an aws-chunked line is too long")),
            None if self.buf.len() > LINE_MAX_BYTES => Err(incomplete("an aws-chunked line is too long")),
            None => Ok(None),
        }
    }

    /// Decoded data of the current chunk.
    fn decoded_data(&mut self, data: Bytes) -> Result<(), S3Error> {
        self.decoded += data.len() as u64;
        if self.decoded > self.decoded_len {
            return Err(incomplete("the body holds more than x-amz-decoded-content-length"));
        }
        if let Some(t) = self.trailer.as_mut() {
            t.hasher.update(&data);
        }
        if self.signer.is_some() {
            self.chunk.extend_from_slice(&data);
        } else {
            self.ready.push_back(data);
        }
        Ok(())
    }

    /// Bytes of the current chunk, `left` of which were still to come.
    fn chunk_data(&mut self, data: Bytes, left: u64) -> Result<(), S3Error> {
        let n = data.len() as u64;
        self.decoded_data(data)?;
        self.state = if n == left { State::DataEnd } else { State::Data { left: left - n } };
        Ok(())
    }

    /// The end of a chunk (its `\r\n` read): a signed chunk's signature is checked and its
    /// bytes go on.
    fn chunk_end(&mut self) -> Result<(), S3Error> {
        if let Some(s) = self.signer.as_mut() {
            let data = std::mem::take(&mut self.chunk).freeze();
            let sig = s.next_chunk(&Sha256::digest(&data).into());
            if !same_signature(&sig, &self.chunk_sig) {
                return Err(S3Error::signature_mismatch());
            }
            if !data.is_empty() {
                self.ready.push_back(data);
            }
        }
        Ok(())
    }

    /// Decodes what the buffer holds; false when it needs more bytes.
    fn step(&mut self) -> Result<bool, S3Error> {
        match self.state {
            State::Header => {
                let Some(line) = self.line()? else { return Ok(false) };
                let text =
                    std::str::from_utf8(&line).map_err(|_| incomplete("a chunk header is not text"))?;
                let (size, ext) = text.split_once(';').unwrap_or((text, ""));
                let size = u64::from_str_radix(size.trim(), 16)
                    .map_err(|_| incomplete("a chunk size is not hex"))?;
                if self.mode.signed() {
                    let sig = ext.trim().strip_prefix("chunk-signature=").ok_or_else(|| {
                        S3Error::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidRequest",
                            "a signed chunk has no chunk-signature",
                        )
                    })?;
                    if size > SIGNED_CHUNK_MAX_BYTES {
                        return Err(incomplete("a signed chunk is larger than 16 MiB"));
                    }
                    self.chunk_sig = sig.as_bytes().to_vec();
                }
                if size > self.decoded_len - self.decoded {
                    return Err(incomplete("the body holds more than x-amz-decoded-content-length"));
                }
                self.last = size == 0;
                self.state = match size {
                    0 if self.decoded != self.decoded_len => {
                        return Err(incomplete("the body ended before x-amz-decoded-content-length"))
                    }
                    // The empty last chunk: without a trailer, its (empty) data and CRLF.
                    0 if !self.mode.trailer() => State::DataEnd,
                    0 => {
                        self.chunk_end()?;
                        State::Trailer
                    }
                    n => State::Data { left: n },
                };
            }
            State::Data { left } => {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                let take = left.min(self.buf.len() as u64) as usize;
                let data = self.buf.split_to(take).freeze();
                self.chunk_data(data, left)?;
            }
            State::DataEnd => {
                if self.buf.len() < 2 {
                    return Ok(false);
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err(incomplete("a chunk's data is not followed by CRLF"));
                }
                self.buf.advance(2);
                self.chunk_end()?;
                self.state = if self.last { State::Done } else { State::Header };
            }
            State::Trailer => {
                let Some(line) = self.line()? else { return Ok(false) };
                if line.is_empty() {
                    self.end_trailer()?;
                    self.state = State::Done;
                    return Ok(true);
                }
                self.trailer_count += 1;
                if self.trailer_count > TRAILER_LINES_MAX {
                    return Err(incomplete("too many trailer lines"));
                }
                let text = std::str::from_utf8(&line).map_err(|_| incomplete("a trailer is not text"))?;
                let (name, value) =
                    text.split_once(':').ok_or_else(|| incomplete("a trailer line has no colon"))?;
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                if name == "x-amz-trailer-signature" {
                    if let Some(s) = self.signer.as_mut() {
                        let sig = s.trailer(&self.trailer_lines);
                        if !same_signature(&sig, value.as_bytes()) {
                            return Err(S3Error::signature_mismatch());
                        }
                    }
                    self.trailer_signed = true;
                    return Ok(true);
                }
                if self.trailer_signed {
                    return Err(incomplete("a trailer line after the trailer's signature"));
                }
                self.trailer_lines.extend_from_slice(format!("{name}:{value}\n").as_bytes());
                let Some(t) = self.trailer.as_ref() else { return Ok(true) };
                if name != t.header {
                    return Ok(true);
                }
                let Some(want) = Check::from_base64(t.algorithm, value, t.header) else {
                    return Err(S3Error::invalid_argument(format!(
                        "Value for {name} trailing header is invalid."
                    )));
                };
                let t = self.trailer.take().expect("checked above");
                if t.hasher.finish(t.algorithm) != want.want {
                    return Err(crate::service::Error::BadDigest(t.header).into());
                }
                self.outcome.borrow_mut().checked = Some((t.header, want.base64()));
            }
            State::Done => {
                if !self.buf.is_empty() {
                    return Err(incomplete("bytes after the end of an aws-chunked body"));
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The trailer's end: its checksum must have come, and when the body is signed, its
    /// signature.
    fn end_trailer(&mut self) -> Result<(), S3Error> {
        if let Some(t) = &self.trailer {
            return Err(S3Error::invalid_argument(format!("the trailer {} did not come", t.header)));
        }
        if self.signer.is_some() && self.mode == Streaming::SignedTrailer && !self.trailer_signed {
            return Err(S3Error::new(StatusCode::BAD_REQUEST, "InvalidRequest", "the trailer is not signed"));
        }
        Ok(())
    }
}

impl<B: BodySource> BodySource for ChunkedBody<B> {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            // Decoded bytes go on, but never the last of them before the end is checked.
            if let Some(front) = self.ready.front() {
                if self.state == State::Done || self.handed + (front.len() as u64) < self.decoded_len {
                    let b = self.ready.pop_front().expect("a front");
                    self.handed += b.len() as u64;
                    return Some(Ok(b));
                }
            }
            match self.step() {
                Ok(true) => continue,
                Ok(false) if self.state == State::Done => return None,
                Ok(false) => {}
                Err(e) => return self.fail(e),
            }
            match self.inner.next().await {
                Some(Ok(mut b)) => {
                    // Unsigned data that arrives at a chunk's start passes without a copy.
                    if let (State::Data { left }, true, None) =
                        (self.state, self.buf.is_empty(), &self.signer)
                    {
                        let data = b.split_to(left.min(b.len() as u64) as usize);
                        if let Err(e) = self.chunk_data(data, left) {
                            return self.fail(e);
                        }
                    }
                    self.buf.extend_from_slice(&b);
                }
                Some(Err(e)) => return Some(Err(e)),
                None => return self.fail(incomplete("the aws-chunked body ended early")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::sigv4::Claim;
    use base64::Engine as _;

    /// A body arriving in the given pieces.
    struct Pieces(VecDeque<Bytes>);

    impl BodySource for Pieces {
        async fn next(&mut self) -> Option<Result<Bytes, String>> {
            self.0.pop_front().map(Ok)
        }
    }

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn claim() -> Claim {
        Claim {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            date: "20130524".into(),
            region: "us-east-1".into(),
            service: "s3".into(),
            signed_headers: Vec::new(),
            signature: vec![7; 32],
            amz_date: "20130524T000000Z".into(),
            expires_s: None,
        }
    }

    fn crc32_b64(data: &[u8]) -> String {
        let mut h = Hasher::new(Algorithm::Crc32);
        h.update(data);
        base64::engine::general_purpose::STANDARD.encode(h.finish(Algorithm::Crc32))
    }

    /// `data` encoded in chunks of `chunk` bytes as `mode` says, signed with the test claim.
    fn encode(data: &[u8], chunk: usize, mode: Streaming, trailer: Option<&str>) -> Vec<u8> {
        let mut signer = ChunkSigner::new(SECRET, &claim()).expect("signer");
        let mut out = Vec::new();
        let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
        pieces.push(&[]);
        for p in pieces {
            out.extend_from_slice(format!("{:x}", p.len()).as_bytes());
            if mode.signed() {
                let sig = signer.next_chunk(&Sha256::digest(p).into());
                out.extend_from_slice(format!(";chunk-signature={}", podstore_engine::hex(&sig)).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            if !p.is_empty() || !mode.trailer() {
                out.extend_from_slice(p);
                out.extend_from_slice(b"\r\n");
            }
        }
        if mode.trailer() {
            let line =
                format!("x-amz-checksum-crc32:{}", trailer.map_or_else(|| crc32_b64(data), str::to_string));
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
            if mode.signed() {
                let sig = signer.trailer(format!("{line}\n").as_bytes());
                out.extend_from_slice(
                    format!("x-amz-trailer-signature:{}\r\n", podstore_engine::hex(&sig)).as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Decodes `wire` split into pieces at `cuts`; the decoded bytes or the S3 error code.
    async fn decode(wire: &[u8], cuts: &[usize], mode: Streaming, len: u64) -> Result<Vec<u8>, &'static str> {
        let mut pieces = VecDeque::new();
        let mut at = 0;
        for &c in cuts.iter().chain([wire.len()].iter()) {
            let c = c.min(wire.len()).max(at);
            pieces.push_back(Bytes::copy_from_slice(&wire[at..c]));
            at = c;
        }
        let signer = ChunkSigner::new(SECRET, &claim());
        let trailer = mode.trailer().then_some("x-amz-checksum-crc32");
        let (mut body, outcome) =
            ChunkedBody::new(Pieces(pieces), mode, signer, trailer, len).expect("headers");
        let mut out = Vec::new();
        loop {
            match body.next().await {
                Some(Ok(b)) => out.extend_from_slice(&b),
                Some(Err(_)) => return Err(outcome.borrow().failure.as_ref().map_or("none", |e| e.code)),
                None => break,
            }
        }
        if mode.trailer() {
            assert_eq!(outcome.borrow().checked.as_ref().map(|c| c.0), Some("x-amz-checksum-crc32"));
        }
        Ok(out)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
    }

    #[test]
    fn every_mode_decodes_whatever_the_pieces() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let mut rng = fastrand::Rng::with_seed(5);
        for mode in [Streaming::Signed, Streaming::SignedTrailer, Streaming::UnsignedTrailer] {
            for chunk in [1000, 65_536, 300_000] {
                let wire = encode(&data, chunk, mode, None);
                for _ in 0..20 {
                    let mut cuts: Vec<usize> =
                        (0..rng.usize(0..12)).map(|_| rng.usize(0..wire.len())).collect();
                    cuts.sort_unstable();
                    let got = run(decode(&wire, &cuts, mode, data.len() as u64));
                    assert!(
                        got.as_deref() == Ok(&data[..]),
                        "{mode:?} chunk {chunk} cuts {cuts:?}: {:?}",
                        got.err()
                    );
                }
            }
            // An empty body.
            let wire = encode(b"", 10, mode, None);
            assert_eq!(run(decode(&wire, &[1, 3], mode, 0)), Ok(Vec::new()), "{mode:?}");
        }
    }

    #[test]
    fn a_wrong_byte_signature_or_checksum_stops_the_body_before_its_end() {
        let data = vec![b'a'; 70_000];
        for mode in [Streaming::Signed, Streaming::SignedTrailer] {
            let mut wire = encode(&data, 65_536, mode, None);
            let at = wire.len() - 400; // in the last data chunk
            wire[at] ^= 1;
            assert_eq!(
                run(decode(&wire, &[], mode, data.len() as u64)),
                Err("SignatureDoesNotMatch"),
                "{mode:?}"
            );
        }
        let mut wire = encode(&data, 65_536, Streaming::UnsignedTrailer, None);
        let at = wire.len() - 100;
        wire[at] ^= 1;
        assert_eq!(run(decode(&wire, &[], Streaming::UnsignedTrailer, 70_000)), Err("BadDigest"));
        let wire = encode(&data, 65_536, Streaming::UnsignedTrailer, Some("AAAAAA=="));
        assert_eq!(run(decode(&wire, &[], Streaming::UnsignedTrailer, 70_000)), Err("BadDigest"));
        // A signed trailer whose checksum was changed after signing.
        let good = encode(&data, 65_536, Streaming::SignedTrailer, None);
        let text = String::from_utf8_lossy(&good[good.len() - 120..]).into_owned();
        let sum = crc32_b64(&data);
        assert!(text.contains(&sum));
        let forged =
            [&good[..good.len() - 120], text.replace(&sum, &crc32_b64(b"other")).as_bytes()].concat();
        assert!(run(decode(&forged, &[], Streaming::SignedTrailer, 70_000)).is_err());
        // Lengths that do not agree with x-amz-decoded-content-length, a cut body, junk.
        let wire = encode(&data, 65_536, Streaming::Signed, None);
        assert_eq!(run(decode(&wire, &[], Streaming::Signed, 69_999)), Err("IncompleteBody"));
        assert_eq!(run(decode(&wire, &[], Streaming::Signed, 70_001)), Err("IncompleteBody"));
        assert_eq!(
            run(decode(&wire[..wire.len() - 3], &[], Streaming::Signed, 70_000)),
            Err("IncompleteBody")
        );
        assert_eq!(run(decode(b"zz\r\n", &[], Streaming::UnsignedTrailer, 1)), Err("IncompleteBody"));
        assert_eq!(run(decode(&[b'1'; 5000], &[], Streaming::UnsignedTrailer, 1)), Err("IncompleteBody"));
        let unsigned = encode(&data, 65_536, Streaming::UnsignedTrailer, None);
        assert_eq!(run(decode(&unsigned, &[], Streaming::Signed, 70_000)), Err("InvalidRequest"));
    }

    #[test]
    fn a_body_never_hands_on_its_last_byte_before_the_end_is_checked() {
        // The first chunk goes on; the second (which completes the length) waits for the
        // trailer, which here is wrong: the service never sees the body's whole length.
        let data = vec![b'z'; 2000];
        let wire = encode(&data, 1000, Streaming::UnsignedTrailer, Some("AAAAAA=="));
        run(async {
            let pieces: VecDeque<Bytes> = [Bytes::copy_from_slice(&wire)].into();
            let (mut body, _) = ChunkedBody::new(
                Pieces(pieces),
                Streaming::UnsignedTrailer,
                None,
                Some("x-amz-checksum-crc32"),
                2000,
            )
            .expect("headers");
            let mut handed = 0;
            while let Some(Ok(b)) = body.next().await {
                handed += b.len();
            }
            assert!(handed < 2000, "{handed}");
        });
    }
}
