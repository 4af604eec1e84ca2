//! The compact codec: bincode 2 with an explicit tag per value.
//!
//! bincode is not self-describing (it has no `deserialize_any`), so JSON-model values
//! cannot go through serde here; each value is written as a one-byte tag followed by
//! its payload. Layout: `B1 'S' 'R' <format version> <bincode payload>`.
//!
//! Format 1 is the record without [`crate::record::SessionMeta`]; format 2 appends the
//! meta fields (five optional values) after the data. A record with empty meta (every
//! anonymous session) is still written as format 1, so older builds keep reading it.

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use serde_json::{Number, Value};

use super::{
    BINARY_FORMAT_VERSION, BINARY_MAGIC, Codec, CodecError, MAX_DEPTH, check_size, decode_any,
};
use crate::expiry::Expiry;
use crate::lazy::{EncodedBytes, LazyData, LazyRecord};
use crate::record::{Record, SessionData, SessionMeta};
use crate::time::Timestamp;

/// Claimed-memory ceiling for one decode: a hostile length prefix cannot make the
/// decoder reserve more than this, whatever the input claims.
const CLAIM_LIMIT: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<CLAIM_LIMIT>()
}

/// bincode 2 records: the compact default.
#[derive(Debug, Clone)]
pub struct BincodeCodec {
    max_encoded_size: usize,
}

impl BincodeCodec {
    /// A bincode codec refusing encodings above `max_encoded_size` bytes.
    pub fn new(max_encoded_size: usize) -> Self {
        BincodeCodec { max_encoded_size }
    }
}

impl Default for BincodeCodec {
    fn default() -> Self {
        BincodeCodec::new(super::DEFAULT_MAX_ENCODED_SIZE)
    }
}

impl Codec for BincodeCodec {
    fn name(&self) -> &'static str {
        "bincode"
    }

    fn encode(&self, r: &Record) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(capacity_hint(r));
        out.extend_from_slice(&BINARY_MAGIC);
        let with_meta = !r.meta.is_empty();
        out.push(if with_meta { BINARY_FORMAT_VERSION } else { 1 });
        bincode::encode_into_std_write(WireRef(r), &mut out, config())
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        if with_meta {
            let m = &r.meta;
            let wire = (
                m.principal.as_deref(),
                m.auth_hash.as_deref(),
                m.last_seen.map(Timestamp::as_unix_millis),
                m.user_agent.as_deref(),
                m.client_addr.as_deref(),
            );
            bincode::encode_into_std_write(wire, &mut out, config())
                .map_err(|e| CodecError::Encode(e.to_string()))?;
        }
        check_size(out, self.max_encoded_size)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Record, CodecError> {
        decode_any(bytes, self.max_encoded_size)
    }

    /// A binary record's header, its data left encoded ([`crate::lazy`]); a JSON record
    /// is decoded whole.
    fn decode_lazy(&self, bytes: EncodedBytes) -> Result<LazyRecord, CodecError> {
        if bytes.first() == Some(&BINARY_MAGIC[0]) && bytes.len() <= self.max_encoded_size {
            decode_lazy(bytes)
        } else {
            decode_any(&bytes, self.max_encoded_size).map(LazyRecord::from)
        }
    }
}

/// About what a record's encoding needs, read off its top level: the header, each key
/// and string with its length and tag, and a byte for every other value and for each
/// item of an array or object. A record of strings (the common case) is encoded without
/// the buffer growing; a nested one grows it as it needs.
fn capacity_hint(r: &Record) -> usize {
    let meta = if r.meta.is_empty() { 0 } else { 64 };
    r.data.iter().fold(64 + meta, |n, (k, v)| {
        let value = match v {
            Value::String(s) => s.len() + 4,
            Value::Array(a) => a.len() + 4,
            Value::Object(m) => m.len() + 4,
            _ => 2,
        };
        n.saturating_add(k.len() + 3).saturating_add(value)
    })
}

/// Checks the magic bytes and returns the format version.
fn format_of(bytes: &[u8]) -> Result<u8, CodecError> {
    let header = BINARY_MAGIC.len() + 1;
    if bytes.len() < header {
        return if BINARY_MAGIC.starts_with(bytes) {
            Err(CodecError::Truncated("header cut short".into()))
        } else {
            Err(CodecError::Foreign)
        };
    }
    if bytes[..BINARY_MAGIC.len()] != BINARY_MAGIC {
        return Err(CodecError::Foreign);
    }
    let version = bytes[BINARY_MAGIC.len()];
    if version != 1 && version != BINARY_FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(u32::from(version)));
    }
    Ok(version)
}

/// Format 2's meta, which follows the data: the meta and the bytes it took.
fn decode_meta(body: &[u8]) -> Result<(SessionMeta, usize), CodecError> {
    type MetaWire = (
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<String>,
    );
    let ((principal, auth_hash, last_seen, user_agent, client_addr), n) =
        bincode::decode_from_slice::<MetaWire, _>(body, config()).map_err(decode_error)?;
    let meta = SessionMeta {
        principal,
        auth_hash,
        last_seen: last_seen.map(Timestamp::from_unix_millis),
        user_agent,
        client_addr,
    };
    Ok((meta, n))
}

fn trailing(extra: usize) -> CodecError {
    CodecError::Corrupt(format!("{extra} trailing bytes after the record"))
}

pub(super) fn decode(bytes: &[u8]) -> Result<Record, CodecError> {
    let (version, head, start) = head_of(bytes)?;
    let mut data = DataReader::new(&bytes[start..]);
    let map = data.map(0)?;
    let mut read = start + data.scan.pos;
    let mut meta = SessionMeta::default();
    if version == BINARY_FORMAT_VERSION {
        let (m, n) = decode_meta(&bytes[read..])?;
        read += n;
        meta = m;
    }
    if read != bytes.len() {
        return Err(trailing(bytes.len() - read));
    }
    Ok(Record {
        data: map,
        expiry: head.expiry,
        created_at: head.created_at,
        expires_at: head.expires_at,
        version: head.version,
        meta,
    })
}

/// The record's header decoded, its data map left in `bytes` ([`crate::lazy`]). Format
/// 1 ends with the data; format 2's meta follows it, so the data is walked (not
/// decoded) to reach the meta.
pub(super) fn decode_lazy(bytes: EncodedBytes) -> Result<LazyRecord, CodecError> {
    let (version, head, start) = head_of(&bytes)?;
    let (end, meta) = if version == BINARY_FORMAT_VERSION {
        let mut scan = Scan::new(&bytes[start..]);
        scan.skip_map::<false>(0)?;
        let end = start + scan.pos;
        let (meta, n) = decode_meta(&bytes[end..])?;
        if end + n != bytes.len() {
            return Err(trailing(bytes.len() - end - n));
        }
        (end, meta)
    } else {
        (bytes.len(), SessionMeta::default())
    };
    let map = bytes.slice(start..end).ok_or_else(cut_short)?;
    Ok(LazyRecord {
        data: LazyData::binary(map),
        expiry: head.expiry,
        created_at: head.created_at,
        expires_at: head.expires_at,
        version: head.version,
        meta,
    })
}

/// The format version and header of a binary record, and where its data map starts.
fn head_of(bytes: &[u8]) -> Result<(u8, Head, usize), CodecError> {
    let version = format_of(bytes)?;
    let body = BINARY_MAGIC.len() + 1;
    let (head, read) =
        bincode::decode_from_slice::<Head, _>(&bytes[body..], config()).map_err(decode_error)?;
    Ok((version, head, body + read))
}

/// The whole data map encoded in `map` (nothing may follow it).
pub(crate) fn decode_data(map: &[u8]) -> Result<SessionData, CodecError> {
    let mut data = DataReader::new(map);
    let decoded = data.map(0)?;
    if data.scan.pos == map.len() {
        Ok(decoded)
    } else {
        Err(trailing(map.len() - data.scan.pos))
    }
}

/// Checks the data map encoded in `map` as [`decode_data`] would read it, building
/// nothing: `Ok` exactly when the whole decode succeeds.
pub(crate) fn check_data(map: &[u8]) -> Result<(), CodecError> {
    let mut scan = Scan::new(map);
    scan.skip_map::<true>(0)?;
    if scan.pos == map.len() {
        Ok(())
    } else {
        Err(trailing(map.len() - scan.pos))
    }
}

/// The value that starts at `at` in `map` (a [`Lookup::Found`] position).
pub(crate) fn decode_value_at(map: &[u8], at: usize) -> Result<Value, CodecError> {
    let rest = map.get(at..).ok_or_else(cut_short)?;
    let mut one = DataReader::new(rest);
    one.run = 0;
    one.value(1)
}

/// What a lookup in an encoded data map found.
pub(crate) enum Lookup {
    /// The key's value starts at this position of the map.
    Found(usize),
    /// No such key.
    Absent,
    /// A key did not come after the one before it: only the whole decode can answer.
    Unordered,
}

/// Finds `key` in the encoded data map `map`, walking the keys in order and skipping
/// values (see [`crate::lazy`], "Key order is trusted"): one comparison per key passed,
/// and one more with the key after the one found, which must come after it.
pub(crate) fn lookup(map: &[u8], key: &str) -> Result<Lookup, CodecError> {
    let key = key.as_bytes();
    let mut scan = Scan::new(map);
    let n = scan.len()?;
    let mut found = None;
    for _ in 0..n {
        let len = scan.len()?;
        let k = scan.take(len)?;
        match (k.cmp(key), found) {
            (std::cmp::Ordering::Less, None) => {}
            (std::cmp::Ordering::Equal, None) => found = Some(scan.pos),
            (std::cmp::Ordering::Greater, _) => break,
            // The key again, or a key before it, after it: not in order.
            (_, Some(_)) => return Ok(Lookup::Unordered),
        }
        scan.skip_value::<false>(1)?;
    }
    Ok(found.map_or(Lookup::Absent, Lookup::Found))
}

/// The key index of the compact record `record` ([`crate::lazy::KeyIndex`]): each key's
/// position in the data map, 4 bytes little-endian, in order. `None` below `min_keys`
/// keys, for a record that cannot be read, or one whose keys are not strictly ascending.
pub(crate) fn key_index(record: &[u8], min_keys: usize) -> Option<Vec<u8>> {
    let (_, _, start) = head_of(record).ok()?;
    let mut scan = Scan::new(&record[start..]);
    let n = scan.len().ok()?;
    if n < min_keys {
        return None;
    }
    let mut index = Vec::with_capacity(n.checked_mul(4)?);
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        index.extend_from_slice(&u32::try_from(scan.pos).ok()?.to_le_bytes());
        let len = scan.len().ok()?;
        let k = scan.take(len).ok()?;
        if prev.is_some_and(|p| k <= p) {
            return None;
        }
        prev = Some(k);
        scan.skip_value::<false>(1).ok()?;
    }
    Some(index)
}

/// Whether `index` holds one position per key of the data map `map`.
pub(crate) fn index_fits(map: &[u8], index: &[u8]) -> bool {
    Scan::new(map)
        .len()
        .is_ok_and(|n| n.checked_mul(4) == Some(index.len()))
}

/// [`lookup`] by binary search over the key positions `index` ([`key_index`]).
pub(crate) fn lookup_indexed(map: &[u8], index: &[u8], key: &str) -> Result<Lookup, CodecError> {
    let key = key.as_bytes();
    let (mut lo, mut hi) = (0, index.len() / 4);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let at = index
            .get(mid * 4..mid * 4 + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .and_then(|p| usize::try_from(p).ok())
            .filter(|&p| p <= map.len())
            .ok_or_else(|| CodecError::Corrupt("key index out of range".into()))?;
        let mut scan = Scan {
            bytes: map,
            pos: at,
        };
        let len = scan.len()?;
        let k = scan.take(len)?;
        match k.cmp(key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(Lookup::Found(scan.pos)),
        }
    }
    Ok(Lookup::Absent)
}

/// A walk over encoded bytes that skips values without decoding them: bincode's
/// standard varint integers, length-prefixed strings and this codec's value tags.
/// Written here because bincode decodes a value or nothing: it has no way to step over
/// one, and a lookup passes hundreds.
struct Scan<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scan<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Scan { bytes, pos: 0 }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.bytes.len() - self.pos {
            return Err(cut_short());
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, CodecError> {
        match self.bytes.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(cut_short()),
        }
    }

    /// A varint as bincode's standard configuration writes integers.
    #[inline]
    fn varint(&mut self) -> Result<u64, CodecError> {
        let b = self.byte()?;
        Ok(match b {
            0..=250 => u64::from(b),
            251 => u64::from(u16::from_le_bytes(
                self.take(2)?.try_into().unwrap_or_default(),
            )),
            252 => u64::from(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or_default(),
            )),
            253 => u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()),
            b => {
                return Err(CodecError::Corrupt(format!(
                    "invalid integer marker {b} in session data"
                )));
            }
        })
    }

    #[inline]
    fn len(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.varint()?)
            .map_err(|_| CodecError::Corrupt("length out of range".into()))
    }

    /// Steps over one value. `CHECK` also checks what only a decode would notice
    /// (UTF-8 of strings, the boolean byte, a finite float), so that a walk with it
    /// fails exactly where the whole decode fails.
    fn skip_value<const CHECK: bool>(&mut self, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::Corrupt(format!(
                "session value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match self.byte()? {
            5 => {
                let n = self.len()?;
                let s = self.take(n)?;
                if CHECK {
                    check_utf8(s)?;
                }
            }
            0 => {}
            1 => {
                let b = self.byte()?;
                if CHECK && b > 1 {
                    return Err(CodecError::Corrupt(format!("invalid boolean byte {b}")));
                }
            }
            2 | 3 => {
                self.varint()?;
            }
            4 => {
                let f = self.take(8)?;
                if CHECK && !f64::from_le_bytes(f.try_into().unwrap_or_default()).is_finite() {
                    return Err(CodecError::Corrupt(
                        "non-finite float in session value".into(),
                    ));
                }
            }
            6 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_value::<CHECK>(depth + 1)?;
                }
            }
            7 => self.skip_map::<CHECK>(depth)?,
            t => return Err(CodecError::Corrupt(format!("unknown value tag {t}"))),
        }
        Ok(())
    }

    fn skip_map<const CHECK: bool>(&mut self, depth: usize) -> Result<(), CodecError> {
        let n = self.len()?;
        for _ in 0..n {
            let k = self.len()?;
            let k = self.take(k)?;
            if CHECK {
                check_utf8(k)?;
            }
            self.skip_value::<CHECK>(depth + 1)?;
        }
        Ok(())
    }
}

/// How many bytes from a string's start [`DataReader`] checks as UTF-8 at once.
const RUN: usize = 4096;

/// Decodes a data map, or one of its values, from the encoded bytes.
///
/// Written here rather than through bincode's `Decode` (which the header and meta
/// still use) for two reasons, both measured on the full load of a 10-key record:
/// - **UTF-8 in runs.** A string's bytes must be checked before they become a `String`;
///   checking each on its own cost about a tenth of a load (twenty short checks). The
///   reader checks the input from a string's start onwards (up to [`RUN`] bytes, or the
///   string's length if longer) and keeps the valid run it finds (its `text`), so the
///   strings that follow are cut from it without another check. Tags and the one-byte
///   lengths of strings under 128 bytes are ASCII, so a run usually covers a record of
///   short strings; it stops at the first byte that is not UTF-8 (a longer length, a
///   float's bytes), and the next string outside it starts a new one. A run that stops
///   early is checked again up to where it stopped, as safe Rust makes a `str` of bytes
///   only by checking them.
/// - **Claims without a generic decoder.** A hostile length must not make the decoder
///   reserve more memory than [`CLAIM_LIMIT`]. The reader keeps bincode's own account
///   (a container claims its length times its entry's size and gives one entry back as
///   each is read; a string claims its bytes) in one field, without the generic
///   decoder's reader and claim calls around every value, which showed in the profile.
///
/// It reads what bincode's standard configuration writes (varint integers, zigzag for
/// signed ones, little-endian floats, length-prefixed strings) and fails where a bincode
/// decode of the same layout fails: `Truncated` where the input ends, `Corrupt` for
/// anything else. `codec::tests` checks it against [`Scan`]'s checking walk on every
/// damaged byte of a varied record.
struct DataReader<'a> {
    scan: Scan<'a>,
    /// How far past a string a run is checked: [`RUN`], or 0 to check each string alone
    /// (reading one value, where the bytes after it are not read).
    run: usize,
    /// A valid UTF-8 run of the input, and where it starts.
    text: &'a str,
    text_at: usize,
    /// Bytes claimed, as bincode's decoder counts them.
    claimed: usize,
}

impl<'a> DataReader<'a> {
    /// A reader of a whole map, checking UTF-8 in runs.
    fn new(bytes: &'a [u8]) -> Self {
        DataReader {
            scan: Scan::new(bytes),
            run: RUN,
            text: "",
            text_at: 0,
            claimed: 0,
        }
    }

    fn claim(&mut self, len: usize, size: usize) -> Result<(), CodecError> {
        self.claimed = len
            .checked_mul(size)
            .and_then(|n| self.claimed.checked_add(n))
            .filter(|&n| n <= CLAIM_LIMIT)
            .ok_or_else(|| {
                CodecError::Corrupt(format!(
                    "session data claims more than the {CLAIM_LIMIT} bytes a decode allows"
                ))
            })?;
        Ok(())
    }

    fn unclaim(&mut self, size: usize) {
        self.claimed = self.claimed.saturating_sub(size);
    }

    /// The string at the reader's position (its length, then its bytes).
    #[inline]
    fn string(&mut self) -> Result<String, CodecError> {
        let len = self.scan.len()?;
        self.claim(len, 1)?;
        let start = self.scan.pos;
        let bytes = self.scan.take(len)?;
        Ok(self.text_of(start, bytes)?.to_owned())
    }

    /// `bytes`, found at `start`, as text: cut from the current run when it lies in it,
    /// else from a new run checked from `start` on.
    #[inline]
    fn text_of(&mut self, start: usize, bytes: &'a [u8]) -> Result<&'a str, CodecError> {
        if let Some(s) = self.cut(start, bytes.len()) {
            return Ok(s);
        }
        let rest = &self.scan.bytes[start..];
        let run = &rest[..bytes.len().max(self.run).min(rest.len())];
        let valid = match simdutf8::compat::from_utf8(run) {
            Ok(text) => text,
            Err(e) => utf8(&run[..e.valid_up_to()])?,
        };
        self.text = valid;
        self.text_at = start;
        // Not in the new run: the string holds a byte that is not UTF-8, or ends
        // inside a character.
        self.cut(start, bytes.len()).map_or_else(|| utf8(bytes), Ok)
    }

    #[inline]
    fn cut(&self, start: usize, len: usize) -> Option<&'a str> {
        let from = start.checked_sub(self.text_at)?;
        self.text.get(from..from.checked_add(len)?)
    }

    /// A value at `depth` (1 for the data map's own values).
    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::Corrupt(format!(
                "session value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(match self.scan.byte()? {
            0 => Value::Null,
            1 => match self.scan.byte()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(CodecError::Corrupt(format!("invalid boolean byte {b}"))),
            },
            2 => {
                // Zigzag, as bincode writes signed integers.
                let n = self.scan.varint()?;
                let i = if n % 2 == 0 {
                    (n / 2) as i64
                } else {
                    !(n / 2) as i64
                };
                Value::Number(i.into())
            }
            3 => Value::Number(self.scan.varint()?.into()),
            4 => {
                let bytes = self.scan.take(8)?;
                let f = f64::from_le_bytes(bytes.try_into().unwrap_or_default());
                Value::Number(Number::from_f64(f).ok_or_else(|| {
                    CodecError::Corrupt("non-finite float in session value".into())
                })?)
            }
            5 => Value::String(self.string()?),
            6 => {
                let len = self.scan.len()?;
                self.claim(len, std::mem::size_of::<Value>())?;
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    self.unclaim(std::mem::size_of::<Value>());
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            7 => Value::Object(self.map(depth)?),
            t => return Err(CodecError::Corrupt(format!("unknown value tag {t}"))),
        })
    }

    /// A map whose values are at `depth + 1` (0 for the data map).
    fn map(&mut self, depth: usize) -> Result<SessionData, CodecError> {
        let len = self.scan.len()?;
        self.claim(len, std::mem::size_of::<(String, Value)>())?;
        if len <= SMALL_MAP {
            // Few enough to insert in place, with no list beside the map.
            let mut map = SessionData::new();
            for _ in 0..len {
                let (k, v) = self.entry(depth)?;
                map.insert(k, v);
            }
            return Ok(map);
        }
        let mut entries = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            entries.push(self.entry(depth)?);
        }
        // Built in one pass: the entries were written in key order (a map's iteration
        // order), which the map's bulk build checks in one comparison per entry, where
        // inserting one by one searches the map for each. Keys that repeat (a record not
        // written by this codec) keep the last value, as inserting would.
        Ok(entries.into_iter().collect())
    }

    /// One key and its value of a map at `depth`, its share of the map's claim given
    /// back first.
    #[inline(always)]
    fn entry(&mut self, depth: usize) -> Result<(String, Value), CodecError> {
        self.unclaim(std::mem::size_of::<(String, Value)>());
        let k = self.string()?;
        let v = self.value(depth + 1)?;
        Ok((k, v))
    }
}

/// `bytes` checked as UTF-8, as the decode checks a string.
fn check_utf8(bytes: &[u8]) -> Result<(), CodecError> {
    utf8(bytes).map(|_| ())
}

#[cold]
fn cut_short() -> CodecError {
    CodecError::Truncated("input ends inside the record".into())
}

fn decode_error(e: DecodeError) -> CodecError {
    match e {
        DecodeError::UnexpectedEnd { .. } => {
            CodecError::Truncated("input ends inside the record".into())
        }
        e => CodecError::Corrupt(e.to_string()),
    }
}

struct WireRef<'a>(&'a Record);

impl Encode for WireRef<'_> {
    fn encode<E: Encoder>(&self, e: &mut E) -> Result<(), EncodeError> {
        let r = self.0;
        r.version.encode(e)?;
        r.created_at.as_unix_millis().encode(e)?;
        r.expires_at.as_unix_millis().encode(e)?;
        match r.expiry {
            Expiry::Default => 0u8.encode(e)?,
            Expiry::BrowserClose => 1u8.encode(e)?,
            Expiry::Idle(n) => {
                2u8.encode(e)?;
                n.encode(e)?;
            }
            Expiry::At(t) => {
                3u8.encode(e)?;
                t.as_unix_millis().encode(e)?;
            }
        }
        encode_map(&r.data, e, 0)
    }
}

fn too_deep() -> EncodeError {
    EncodeError::OtherString(format!(
        "session value nested deeper than {MAX_DEPTH} levels"
    ))
}

fn encode_map<E: Encoder>(m: &SessionData, e: &mut E, depth: usize) -> Result<(), EncodeError> {
    m.len().encode(e)?;
    for (k, v) in m {
        k.encode(e)?;
        encode_value(v, e, depth + 1)?;
    }
    Ok(())
}

fn encode_value<E: Encoder>(v: &Value, e: &mut E, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    match v {
        Value::Null => 0u8.encode(e),
        Value::Bool(b) => {
            1u8.encode(e)?;
            b.encode(e)
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                3u8.encode(e)?;
                u.encode(e)
            } else if let Some(i) = n.as_i64() {
                2u8.encode(e)?;
                i.encode(e)
            } else {
                4u8.encode(e)?;
                n.as_f64().unwrap_or(0.0).encode(e)
            }
        }
        Value::String(s) => {
            5u8.encode(e)?;
            s.encode(e)
        }
        Value::Array(a) => {
            6u8.encode(e)?;
            a.len().encode(e)?;
            for x in a {
                encode_value(x, e, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            7u8.encode(e)?;
            encode_map(m, e, depth)
        }
    }
}

/// The record's header: everything before the data map.
struct Head {
    version: u64,
    created_at: Timestamp,
    expires_at: Timestamp,
    expiry: Expiry,
}

impl<C> Decode<C> for Head {
    fn decode<D: Decoder<Context = C>>(d: &mut D) -> Result<Self, DecodeError> {
        let version = u64::decode(d)?;
        let created_at = Timestamp::from_unix_millis(i64::decode(d)?);
        let expires_at = Timestamp::from_unix_millis(i64::decode(d)?);
        let expiry = match u8::decode(d)? {
            0 => Expiry::Default,
            1 => Expiry::BrowserClose,
            2 => Expiry::Idle(i64::decode(d)?),
            3 => Expiry::At(Timestamp::from_unix_millis(i64::decode(d)?)),
            t => return Err(DecodeError::OtherString(format!("unknown expiry tag {t}"))),
        };
        Ok(Head {
            version,
            created_at,
            expires_at,
            expiry,
        })
    }
}

/// The most entries a map decodes by inserting them one by one. Inserting searches the
/// node from its first key, and entries come in key order, so the `n`th insert compares
/// with every key before it: `n(n-1)/2` comparisons in all, against about `2n` and one
/// list for a bulk build. Up to 4 keys (at most 6 comparisons) inserting is cheaper; at
/// 10 it took a quarter of a load's time.
const SMALL_MAP: usize = 4;

/// `bytes` as UTF-8. Checked with `simdutf8` (several bytes per instruction, where the
/// standard library's check took about a fifth of a record's decode), and again with
/// the standard library only to describe a failure.
fn utf8(bytes: &[u8]) -> Result<&str, CodecError> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| {
        CodecError::Corrupt(match std::str::from_utf8(bytes) {
            Err(e) => format!("invalid UTF-8 in session data: {e}"),
            Ok(_) => "invalid UTF-8 in session data".into(),
        })
    })
}
