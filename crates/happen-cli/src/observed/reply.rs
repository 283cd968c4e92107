//! How a request was answered, as seen on its reply subject.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time;

/// How a request was answered, as seen on its reply subject.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Reply {
    /// When the reply was seen, in microseconds since the Unix epoch.
    pub(crate) received_us: u64,
    /// `ok`, `error` or `stream` (a stream started; its end is not tracked).
    pub(crate) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorInfo>,
}

/// An error reply: the error body of `WIRE.md` ("Request / reply"), or its headers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorInfo {
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<String>,
    /// The errors below this one (`downstream`), outermost first; the last is the origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) chain: Vec<ErrorInfo>,
}

impl ErrorInfo {
    /// Reads `{"error": {...}}`; `None` when `body` is not an error body.
    pub(crate) fn from_body(body: &[u8]) -> Option<ErrorInfo> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let mut e = Self::one(v.get("error")?)?;
        let mut next = v["error"].get("downstream");
        while let Some(d) = next {
            match Self::one(d) {
                Some(link) => e.chain.push(link),
                None => break,
            }
            next = d.get("downstream");
        }
        Some(e)
    }

    fn one(v: &Value) -> Option<ErrorInfo> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(ErrorInfo {
            kind: text("kind")?,
            message: text("message").unwrap_or_default(),
            node: text("node"),
            code: text("code"),
            chain: Vec::new(),
        })
    }
}

/// The reply a message on a reply subject is, received now: `None` for what is not a first
/// answer (stream frames, credit).
pub(crate) fn reply_of(msg: &async_nats::Message) -> Option<Reply> {
    let headers = msg.headers.as_ref();
    let get = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| percent_decode(v.as_str()))
    };
    let status = match get("Happen-Status").as_deref() {
        Some("error") => "error",
        Some("stream") => "stream",
        // stream frames and credit are not the first answer
        _ if get("Happen-Frame").is_some() || get("Happen-Credit").is_some() => return None,
        _ => "ok",
    };
    let error = (status == "error").then(|| {
        ErrorInfo::from_body(&msg.payload).unwrap_or_else(|| ErrorInfo {
            kind: get("Happen-Error-Kind").unwrap_or_else(|| "transport".to_owned()),
            message: get("Happen-Error-Message").unwrap_or_default(),
            node: get("Happen-Error-Node"),
            code: get("Happen-Error-Code"),
            chain: Vec::new(),
        })
    });
    Some(Reply {
        received_us: time::now_us(),
        status,
        error,
    })
}

/// Undoes the escapes of `WIRE.md`'s text headers (`%25`, `%0D`, `%0A`) in one pass, so an
/// escaped `%` followed by `0A` stays `%0A`; anything else is kept as it is.
pub(crate) fn percent_decode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (c, skip) = match tail.get(..3) {
            Some("%25") => ('%', 3),
            Some("%0D") => ('\r', 3),
            Some("%0A") => ('\n', 3),
            _ => ('%', 1),
        };
        out.push(c);
        rest = &tail[skip..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn header_escapes_are_undone_in_one_pass() {
        assert_eq!(percent_decode("a%0Ab%0Dc"), "a\nb\rc");
        assert_eq!(percent_decode("100%250A"), "100%0A");
        assert_eq!(percent_decode("50% off %"), "50% off %");
        assert_eq!(percent_decode("é%25"), "é%");
    }
}
