//! Opaque, integrity-protected pagination cursors.
//!
//! A cursor is `base64url(json) "." base64url(hmac_sha256(key, json)[..16])`.
//! Clients cannot forge or edit one: a cursor that fails the check is a 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;

use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies cursors with a server-side key.
#[derive(Clone)]
pub struct CursorCodec {
    /// An HMAC-SHA256 output; an array, so that handlers' states holding a
    /// codec clone without allocating.
    key: [u8; 32],
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec(..)")
    }
}

impl CursorCodec {
    /// `secret` is domain-separated so the same configured secret can serve
    /// other purposes without its MACs being interchangeable.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| {
            // HMAC accepts keys of any length; this branch cannot be reached.
            HmacSha256::new_from_slice(b"atlas").unwrap_or_else(|_| unreachable!())
        });
        mac.update(b"atlas.cursor.v1");
        let mut key = [0; 32];
        key.copy_from_slice(&mac.finalize().into_bytes());
        CursorCodec { key }
    }

    fn tag(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(payload);
        mac.finalize().into_bytes()[..16].to_vec()
    }

    pub fn encode<T: Serialize>(&self, value: &T) -> String {
        // Serializing plain cursor structs cannot fail.
        let payload = serde_json::to_vec(value).unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(self.tag(&payload))
        )
    }

    /// For a page fetched with `limit + 1` rows: trims it to `limit` and
    /// returns the cursor after its last item when more rows follow.
    pub fn next_page<T, C: Serialize>(
        &self,
        items: &mut Vec<T>,
        limit: i64,
        position: impl Fn(&T) -> C,
    ) -> Option<String> {
        if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|last| self.encode(&position(last)))
        } else {
            None
        }
    }

    pub fn decode<T: DeserializeOwned>(&self, cursor: &str) -> Result<T, ApiError> {
        let bad = || ApiError::BadRequest("invalid cursor".into());
        let (payload, tag) = cursor.split_once('.').ok_or_else(bad)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(|_| bad())?;
        mac.update(&payload);
        mac.verify_truncated_left(&tag).map_err(|_| bad())?;
        if tag.len() != 16 {
            return Err(bad());
        }
        serde_json::from_slice(&payload).map_err(|_| bad())
    }
}

/// A validated `?limit=`: 1–200, default 50; outside → 422.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation("limit", "limit must be between 1 and 200")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct C {
        k: String,
        id: String,
    }

    #[test]
    fn round_trip_and_tamper() {
        let codec = CursorCodec::new(b"secret");
        let c = C {
            k: "2026".into(),
            id: "x".into(),
        };
        let s = codec.encode(&c);
        assert_eq!(codec.decode::<C>(&s).unwrap(), c);
        let mut tampered = s.clone();
        tampered.replace_range(0..1, if s.starts_with('e') { "f" } else { "e" });
        assert!(matches!(codec.decode::<C>(&tampered), Err(ApiError::BadRequest(_))));
        assert!(codec.decode::<C>("garbage").is_err());
        assert!(CursorCodec::new(b"other").decode::<C>(&s).is_err());
    }

    #[test]
    fn limits() {
        assert_eq!(page_limit(None).unwrap(), 50);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(201)).is_err());
        assert_eq!(page_limit(Some(200)).unwrap(), 200);
    }
}
