//! Identifiers: node ids, event ids (`evt-<uuid>`) and correlation ids (`txn-<uuid>`).
//!
//! Event and correlation ids are generated without formatting: a per-process random 128-bit base
//! mixed with a counter, laid out as a version-4 UUID and only turned into text when displayed or
//! serialized. Ids received from elsewhere in any other shape are kept verbatim.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A cheaply clonable immutable string: either `'static` or shared.
#[derive(Clone)]
pub(crate) enum SharedStr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl SharedStr {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            SharedStr::Static(s) => s,
            SharedStr::Shared(s) => s,
        }
    }

    /// Equality that skips comparing the bytes when both share one buffer (the usual case
    /// for an event type: [`SharedStr::copy_of`] hands out the same buffer again).
    pub(crate) fn same(&self, other: &SharedStr) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || eq_bytes(a.as_bytes(), b.as_bytes())
    }
}

/// `a == b`, with strings of up to 16 bytes (most event types and node ids) compared in two
/// overlapping words instead of through a call to `memcmp` (~20 instructions, twice per event).
#[inline]
pub(crate) fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word8(s: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[..8]);
        u64::from_ne_bytes(w)
    }
    fn word4(s: &[u8]) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[..4]);
        u32::from_ne_bytes(w)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        8..=16 => word8(a) == word8(b) && word8(&a[n - 8..]) == word8(&b[n - 8..]),
        4..8 => word4(a) == word4(b) && word4(&a[n - 4..]) == word4(&b[n - 4..]),
        0..4 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for SharedStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for SharedStr {}
impl Hash for SharedStr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl SharedStr {
    /// A shared copy of a borrowed string. The last few strings copied on this thread are
    /// remembered, so the usual `Event::new("order.created", ..)` in a loop shares one buffer
    /// instead of allocating (and later freeing, often on another thread) per event.
    pub(crate) fn copy_of(s: &str) -> SharedStr {
        const SLOTS: usize = 4;
        const LONGEST: usize = 64;
        /// The remembered strings, the slot to overwrite next, and the slot of the last hit
        /// (checked first: a loop sending one type hits it every time, one comparison).
        type Recent = ([Option<Arc<str>>; SLOTS], usize, usize);
        thread_local! {
            static RECENT: std::cell::RefCell<Recent> =
                const { std::cell::RefCell::new(([const { None }; SLOTS], 0, 0)) };
        }
        if s.len() > LONGEST {
            return SharedStr::Shared(Arc::from(s));
        }
        RECENT
            .try_with(|recent| {
                let mut recent = recent.borrow_mut();
                let (slots, next, last) = &mut *recent;
                if let Some(hit) = &slots[*last]
                    && eq_bytes(hit.as_bytes(), s.as_bytes())
                {
                    return hit.clone();
                }
                let found = slots
                    .iter()
                    .enumerate()
                    .find_map(|(i, a)| Some((i, a.as_ref().filter(|a| &***a == s)?.clone())));
                if let Some((i, hit)) = found {
                    *last = i;
                    return hit;
                }
                let fresh: Arc<str> = Arc::from(s);
                slots[*next] = Some(fresh.clone());
                *last = *next;
                *next = (*next + 1) % SLOTS;
                fresh
            })
            .map_or_else(|_| SharedStr::Shared(Arc::from(s)), SharedStr::Shared)
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr::Shared(Arc::from(s))
    }
}

/// The id of a node, unique within a [`Happen`](crate::Happen) instance.
///
/// Built from any string: a borrowed `&str` (of any lifetime) or a `&String` is copied once
/// into a shared buffer, a `String` is moved; clones share the buffer.
/// [`from_static`](NodeId::from_static) wraps a `&'static str` without allocating.
///
/// ```
/// use happen::NodeId;
/// let id = NodeId::from("order-service");
/// assert_eq!(id.as_str(), "order-service");
/// assert_eq!(id, "order-service");
///
/// let name = format!("worker-{}", 7);
/// assert_eq!(NodeId::from(name.as_str()), "worker-7"); // a borrowed, non-'static &str
///
/// const GATEWAY: NodeId = NodeId::from_static("gateway");
/// assert_eq!(GATEWAY.as_str(), "gateway");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeId(SharedStr);

impl NodeId {
    /// A node id from a `&'static str`, without allocating (usable in `const`s).
    pub const fn from_static(id: &'static str) -> NodeId {
        NodeId(SharedStr::Static(id))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId(SharedStr::copy_of(s))
    }
}
impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(s.into())
    }
}
impl From<&String> for NodeId {
    fn from(s: &String) -> Self {
        NodeId::from(s.as_str())
    }
}
impl From<&NodeId> for NodeId {
    fn from(s: &NodeId) -> Self {
        s.clone()
    }
}
impl Deref for NodeId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}
impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}
impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // from the input's bytes where it can (no `String` in between), and shared with the
        // recent ids (`copy_of`): a sender's id arrives on every event it sends
        read_str(d, "a node id", |s| NodeId::from(s))
    }
}

/// Deserializes a string and gives it to `make` without owning it first: borrowed from the
/// input when the deserializer can (serde's `Cow<str>` always copies into a `String`).
pub(crate) fn read_str<'de, D, R>(
    d: D,
    what: &'static str,
    make: fn(&str) -> R,
) -> Result<R, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<R> {
        what: &'static str,
        make: fn(&str) -> R,
    }
    impl<R> serde::de::Visitor<'_> for V<R> {
        type Value = R;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<R, E> {
            Ok((self.make)(v))
        }
    }
    d.deserialize_str(V { what, make })
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum IdRepr {
    /// Generated here (or parsed from the canonical form): a UUID laid out as v4.
    Uuid(u128),
    /// Received in another shape; kept verbatim.
    Text(Arc<str>),
    /// Not assigned yet (an event before it is sent): prints as the empty string. No
    /// allocation, unlike `Text("")` — `Event::new` makes two of these per event.
    Empty,
}

fn next_uuid() -> u128 {
    static BASE: OnceLock<u128> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    /// Counter values a thread takes at once, so making an id touches no shared state.
    const BLOCK: u64 = 1024;
    thread_local! {
        static RANGE: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    let base = *BASE.get_or_init(|| uuid::Uuid::new_v4().as_u128());
    let n = RANGE.with(|r| {
        let (next, end) = r.get();
        if next == end {
            let start = COUNTER.fetch_add(BLOCK, Ordering::Relaxed);
            r.set((start + 1, start + BLOCK));
            start
        } else {
            r.set((next + 1, end));
            next
        }
    }) as u128;
    // Mix the counter into the low 62 bits (below the variant bits), spread so neighbouring
    // ids differ in more than the last digit, then force the v4 version and RFC variant bits.
    let mixed = base ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1u128 << 62) - 1));
    (mixed & !(0xF_u128 << 76) | (0x4_u128 << 76)) & !(0x3_u128 << 62) | (0x2_u128 << 62)
}

fn parse_repr(prefix: &str, s: &str) -> IdRepr {
    if s.is_empty() {
        return IdRepr::Empty;
    }
    // The compact form only when it prints back identically.
    if let Some(rest) = s.strip_prefix(prefix)
        && let Some(u) = parse_lower_hyphenated(rest.as_bytes())
    {
        return IdRepr::Uuid(u);
    }
    IdRepr::Text(Arc::from(s))
}

/// The UUID in `s` if `s` is exactly its lowercase hyphenated form
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits `0-9a-f`); no allocation.
fn parse_lower_hyphenated(s: &[u8]) -> Option<u128> {
    /// The value of a lowercase hex digit, or `0xFF`.
    const HEX: [u8; 256] = {
        let mut t = [0xFF; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    /// Appends the hex digits of `group` to `acc`; `None` at a non-digit.
    fn digits(mut acc: u64, group: &[u8]) -> Option<u64> {
        for &b in group {
            let d = HEX[b as usize];
            if d == 0xFF {
                return None;
            }
            acc = (acc << 4) | u64::from(d);
        }
        Some(acc)
    }
    if s.len() != uuid::fmt::Hyphenated::LENGTH
        || s[8] != b'-'
        || s[13] != b'-'
        || s[18] != b'-'
        || s[23] != b'-'
    {
        return None;
    }
    let hi = digits(digits(digits(0, &s[0..8])?, &s[9..13])?, &s[14..18])?;
    let lo = digits(digits(0, &s[19..23])?, &s[24..36])?;
    Some((u128::from(hi) << 64) | u128::from(lo))
}

/// Room for an id's prefix and a hyphenated UUID.
const ID_BUFFER: usize = 8 + uuid::fmt::Hyphenated::LENGTH;

/// Writes `prefix` and the hyphenated lowercase UUID into `buf`: the canonical text of a
/// compact id, without the formatting machinery (an event on the wire carries two or three).
fn encode_uuid<'b>(prefix: &str, u: u128, buf: &'b mut [u8; ID_BUFFER]) -> &'b str {
    /// The two lowercase hex digits of every byte value.
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
            i += 1;
        }
        t
    };
    /// Where each byte's two digits go in `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    // a byte at a time from the table into fixed places (uuid's encoder goes a digit at a
    // time: ~250 instructions an id)
    let (head, tail) = buf.split_at_mut(prefix.len());
    head.copy_from_slice(prefix.as_bytes());
    let text = &mut tail[..uuid::fmt::Hyphenated::LENGTH];
    text.fill(b'-');
    for (byte, at) in u.to_be_bytes().into_iter().zip(AT) {
        let [hi, lo] = PAIRS[usize::from(byte)];
        text[at] = hi;
        text[at + 1] = lo;
    }
    let len = prefix.len() + uuid::fmt::Hyphenated::LENGTH;
    // ASCII: the prefix is one of this module's literals, the rest hex digits and hyphens
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

fn fmt_repr(prefix: &str, r: &IdRepr, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match r {
        IdRepr::Uuid(u) => f.write_str(encode_uuid(prefix, *u, &mut [0; ID_BUFFER])),
        IdRepr::Text(s) => f.write_str(s),
        IdRepr::Empty => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(IdRepr);

        impl $name {
            /// A fresh, unique id.
            pub fn new() -> Self {
                $name(IdRepr::Uuid(next_uuid()))
            }

            /// Wraps an id received from elsewhere; the canonical form is stored compactly,
            /// any other string verbatim.
            pub fn parse(s: &str) -> Self {
                $name(parse_repr($prefix, s))
            }
        }

        impl $name {
            /// Not assigned yet (prints as the empty string; no allocation).
            pub(crate) fn unassigned() -> Self {
                $name(IdRepr::Empty)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_repr($prefix, &self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "\"{self}\"")
            }
        }

        impl $name {
            /// Appends the id as a JSON string (as its `Serialize` writes it with serde_json).
            pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
                match &self.0 {
                    IdRepr::Uuid(u) => {
                        // ASCII hex digits and hyphens: nothing to escape
                        out.push(b'"');
                        out.extend_from_slice(encode_uuid($prefix, *u, &mut [0; ID_BUFFER]).as_bytes());
                        out.push(b'"');
                    }
                    IdRepr::Text(t) => crate::json::write_str(out, t),
                    IdRepr::Empty => out.extend_from_slice(b"\"\""),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                const _: () = assert!($prefix.len() <= 8, "the prefix must fit ID_BUFFER");
                match &self.0 {
                    IdRepr::Uuid(u) => s.serialize_str(encode_uuid($prefix, *u, &mut [0; ID_BUFFER])),
                    IdRepr::Text(t) => s.serialize_str(t),
                    IdRepr::Empty => s.serialize_str(""),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                read_str(d, concat!("an id such as `", $prefix, "<uuid>`"), $name::parse)
            }
        }
    };
}

id_type!(
    /// The id of one event, `evt-<uuid>`.
    ///
    /// ```
    /// use happen::EventId;
    /// let id = EventId::new();
    /// assert!(id.to_string().starts_with("evt-"));
    /// assert_eq!(EventId::parse(&id.to_string()), id);
    /// ```
    EventId,
    "evt-"
);

id_type!(
    /// The id of a transaction (a causal chain of events), `txn-<uuid>`; inherited along the chain.
    ///
    /// ```
    /// use happen::CorrelationId;
    /// let id = CorrelationId::new();
    /// assert!(id.to_string().starts_with("txn-"));
    /// // An id from elsewhere (an HTTP header, another system) is kept verbatim:
    /// assert_eq!(CorrelationId::parse("req-42").to_string(), "req-42");
    /// ```
    ///
    /// A root event gets a fresh one unless it joins a transaction with
    /// [`Event::with_correlation_id`](crate::Event::with_correlation_id).
    CorrelationId,
    "txn-"
);

impl CorrelationId {
    /// The transaction id of a root event: its event's UUID under the `txn-` prefix (unique
    /// as the event id is, and one id generation per root event instead of two).
    pub(crate) fn for_root(event: &EventId) -> CorrelationId {
        CorrelationId(event.0.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn eq_bytes_agrees_with_eq_at_every_length() {
        let long = "abcdefghijklmnopqrstuvwxyz0123456789";
        let copy = long.to_owned(); // another buffer: equal bytes, not equal pointers
        for n in 0..=long.len() {
            let a = &long.as_bytes()[..n];
            assert!(eq_bytes(a, &copy.as_bytes()[..n]), "{n}");
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 1;
                assert!(!eq_bytes(a, &b), "length {n}, byte {i}");
            }
            if n < long.len() {
                assert!(
                    !eq_bytes(a, &long.as_bytes()[..=n]),
                    "lengths {n} and {}",
                    n + 1
                );
            }
        }
    }

    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_unique_and_valid_v4() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = EventId::new();
            let s = id.to_string();
            let u = uuid::Uuid::parse_str(&s[4..]).unwrap();
            assert_eq!(u.get_version_num(), 4, "{s}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{s}");
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn ids_made_on_many_threads_are_unique() {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..5_000)
                        .map(|_| EventId::new().to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for t in threads {
            for id in t.join().unwrap() {
                assert!(seen.insert(id), "duplicate id");
            }
        }
        assert_eq!(seen.len(), 40_000);
    }

    #[test]
    fn recent_borrowed_strings_share_one_buffer() {
        let owned = String::from("order.created");
        let (SharedStr::Shared(a), SharedStr::Shared(b)) = (
            SharedStr::copy_of(&owned),
            SharedStr::copy_of("order.created"),
        ) else {
            panic!("borrowed strings are shared copies");
        };
        assert!(Arc::ptr_eq(&a, &b));
        for t in ["a", "b", "c", "d", "e", "order.created"] {
            assert_eq!(SharedStr::copy_of(t).as_str(), t);
        }
        let long = "x".repeat(100);
        assert_eq!(SharedStr::copy_of(&long).as_str(), long);
    }

    #[test]
    fn a_root_transaction_id_shares_its_events_uuid() {
        let e = EventId::new();
        let c = CorrelationId::for_root(&e);
        assert_eq!(e.to_string()[4..], c.to_string()[4..]);
        assert!(c.to_string().starts_with("txn-"));
        assert_eq!(EventId::unassigned().to_string(), "");
    }

    #[test]
    fn foreign_ids_are_kept_verbatim() {
        for s in [
            "evt-123",
            "whatever",
            "evt-C0FFEE00-0000-4000-8000-000000000000",
        ] {
            assert_eq!(EventId::parse(s).to_string(), s);
        }
        let canon = "txn-0f0e0d0c-0b0a-4908-8706-050403020100";
        let id = CorrelationId::parse(canon);
        assert!(matches!(id.0, IdRepr::Uuid(_)));
        assert_eq!(id.to_string(), canon);
        // mixed case, or a 36-character string that is no UUID: verbatim
        for s in [
            "evt-0f0e0d0c-0b0a-4908-8706-05040302010A",
            "evt-0f0e0d0c-0b0a-4908-8706-05040302010g",
            "evt-0f0e0d0c+0b0a-4908-8706-050403020100",
        ] {
            let id = EventId::parse(s);
            assert!(matches!(id.0, IdRepr::Text(_)), "{s}");
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn the_canonical_form_parses_in_one_pass_as_uuid_does() {
        let ok = [
            "0f0e0d0c-0b0a-4908-8706-050403020100",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
        ];
        for s in ok {
            let want = uuid::Uuid::try_parse(s).unwrap().as_u128();
            assert_eq!(parse_lower_hyphenated(s.as_bytes()), Some(want), "{s}");
        }
        let not = [
            "",
            "0f0e0d0c-0b0a-4908-8706-05040302010",   // short
            "0f0e0d0c-0b0a-4908-8706-0504030201000", // long
            "0F0e0d0c-0b0a-4908-8706-050403020100",  // uppercase: would not print back
            "0f0e0d0c0b0a-4908-8706-0504030201000",  // hyphen misplaced
            "0f0e0d0c-0b0a-4908-8706-05040302010-",
            "0f0e0d0c-0b0a-4908-8706-05040302010g",
            "{f0e0d0c-0b0a-4908-8706-050403020100",
        ];
        for s in not {
            assert_eq!(parse_lower_hyphenated(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn the_table_encoder_writes_what_uuid_writes() {
        let mut x: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        let mut values = vec![0, u128::MAX, 1, 1 << 127];
        for _ in 0..2_000 {
            // a 128-bit LCG: every digit position sees every value
            x = x
                .wrapping_mul(0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645)
                .wrapping_add(0x5851_f42d_4c95_7f2d_1405_7b7e_f767_814f);
            values.push(x);
        }
        for u in values {
            let mut buf = [0; ID_BUFFER];
            let want = format!("evt-{}", uuid::Uuid::from_u128(u).hyphenated());
            assert_eq!(encode_uuid("evt-", u, &mut buf), want);
            assert_eq!(parse_lower_hyphenated(&want.as_bytes()[4..]), Some(u));
        }
    }

    #[test]
    fn node_ids_read_from_json_with_escapes() {
        let id: NodeId = serde_json::from_str(r#""api-\u0031""#).unwrap();
        assert_eq!(id.as_str(), "api-1");
        assert!(serde_json::from_str::<NodeId>("5").is_err());
        assert!(serde_json::from_str::<EventId>("null").is_err());
    }

    #[test]
    fn ids_serialize_as_their_display() {
        let ids = [
            EventId::new(),
            EventId::parse("evt-0f0e0d0c-0b0a-4908-8706-050403020100"),
            EventId::parse("evt-from-elsewhere \"quoted\""),
            EventId(IdRepr::Empty),
            EventId(IdRepr::Uuid(u128::MAX)),
            EventId(IdRepr::Uuid(0)),
        ];
        for id in ids {
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, serde_json::to_string(&id.to_string()).unwrap());
            assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
        }
        let txn = CorrelationId::for_root(&EventId::new());
        let json = serde_json::to_string(&txn).unwrap();
        assert!(
            json.starts_with("\"txn-") && json.len() == 2 + 4 + 36,
            "{json}"
        );
    }
}
