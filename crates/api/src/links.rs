//! Signed links: a URL that downloads one stored file, with no other
//! credential, until it expires. A link names the app, the media, the API
//! token that asked for it, its expiry and how the file is shown (inline or
//! as an attachment), signed with HMAC-SHA256 under a key of `links.keys`;
//! the id of that key rides in the link, so that a link signed by an older
//! key verifies while that key is still configured. Nothing about a link is
//! stored: the medium and the token are looked up on every use, so deleting
//! the medium (or its expiry) or revoking the token ends every link made
//! with it.
//!
//! A token is URL-safe base64 (no padding) of:
//!
//! ```text
//! version (2 = 0x02)
//! key id length (1) ‖ key id
//! app id length (1) ‖ app id
//! media id length (1) ‖ media id
//! API token id length (1) ‖ API token id
//! expiry, unix seconds (8, big-endian)
//! disposition (1: 0x00 attachment, 0x01 inline)
//! tag (32) = HMAC-SHA256(key, "mediavault-link-v1" ‖ every byte above)
//! ```
//!
//! The fields are readable by whoever holds the link; only the tag is secret
//! to make. Every field is length-prefixed, so no two links sign the same
//! bytes, and the label keeps the tag from standing for anything else
//! signed with the same key.
//!
//! Version 1, made before links named their token, has no token id field;
//! such a link still verifies until its own expiry (at most `links.max_ttl`
//! after it was made), so that links handed out before an upgrade keep
//! working.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use mediavault_storage::keys::{KeyListError, generate_key_line, parse_key_list};
use mediavault_storage::{AppId, MediaId, Millis, TokenId};
use sha2::Sha256;

use crate::ApiState;
use crate::error::{ApiError, LINKS_DISABLED};
use crate::media_path::plausible;
use crate::path::could_be_app_id;

/// The path under which links are served: `{base}/l/{token}`.
pub const LINK_PATH: &str = "/l/";

/// What a tag is a MAC of, before the link's bytes.
const DOMAIN: &[u8] = b"mediavault-link-v1";
/// The first byte of a token: the version of its layout.
const VERSION: u8 = 2;
/// The layout before the token id was added; still read.
const VERSION_WITHOUT_TOKEN: u8 = 1;
/// Bytes of a tag: HMAC-SHA256 whole.
const TAG_LEN: usize = 32;
/// Longest token looked at (in characters); the longest a link can be,
/// with a 64-byte key id, a 64-byte app id, a 128-byte media id and a
/// 16-byte token id, is 424.
const MAX_TOKEN_LEN: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// How a link's file is shown: `Content-Disposition: inline` (in the
/// browser, where it can) or `attachment` (saved), with the file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    Inline,
    #[default]
    Attachment,
}

impl Disposition {
    fn byte(self) -> u8 {
        match self {
            Disposition::Attachment => 0,
            Disposition::Inline => 1,
        }
    }

    fn from_byte(byte: u8) -> Option<Disposition> {
        match byte {
            0 => Some(Disposition::Attachment),
            1 => Some(Disposition::Inline),
            _ => None,
        }
    }

    /// The header's first word.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Inline => "inline",
            Disposition::Attachment => "attachment",
        }
    }
}

/// `links.keys` was refused; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("links.keys: {0}")]
pub struct LinkKeysError(#[from] KeyListError);

struct LinkKey {
    id: String,
    /// The HMAC keyed once, cloned for each link.
    mac: HmacSha256,
}

/// The keys that sign links, from `links.keys` (`id:base64,…`, the form of
/// `crypto.keys`): the first signs new links; every one verifies them.
pub struct LinkKeys {
    keys: Vec<LinkKey>,
}

impl LinkKeys {
    /// Parses `id:base64,id:base64` (32 bytes each); the first is active.
    pub fn parse(spec: &str) -> Result<LinkKeys, LinkKeysError> {
        let keys = parse_key_list(spec)?
            .into_iter()
            .map(|key| LinkKey {
                mac: HmacSha256::new_from_slice(key.material.as_slice()).expect("HMAC takes any key length"),
                id: key.id,
            })
            .collect();
        Ok(LinkKeys { keys })
    }

    /// A new `id:base64` line with 32 random bytes (a development key, or
    /// one to configure).
    pub fn generate_line(id: &str) -> String {
        generate_key_line(id)
    }

    /// The id of the key that signs new links.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every configured key id, active first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    fn find(&self, id: &[u8]) -> Option<&LinkKey> {
        self.keys.iter().find(|k| k.id.as_bytes() == id)
    }
}

impl fmt::Debug for LinkKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

/// What a verified link grants: reading this medium of this app, shown so,
/// until `expires_at`, while the token that asked for it is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub app_id: AppId,
    pub media_id: MediaId,
    /// The API token the link was made with; `None` for a version 1 link.
    pub token_id: Option<TokenId>,
    /// Milliseconds since the epoch (a whole second).
    pub expires_at: Millis,
    pub disposition: Disposition,
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Not a link, or not one signed by a configured key.
    #[error("invalid link")]
    Invalid,
    /// A genuine link past its expiry.
    #[error("link expired")]
    Expired,
    /// A genuine link whose API token has been revoked since.
    #[error("link revoked")]
    Revoked,
}

/// Makes and checks links.
#[derive(Debug)]
pub struct LinkSigner {
    keys: LinkKeys,
    max_ttl: Duration,
}

impl LinkSigner {
    pub fn new(keys: LinkKeys, max_ttl: Duration) -> LinkSigner {
        LinkSigner { keys, max_ttl }
    }

    /// The longest a link may be asked to last (`links.max_ttl`).
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    pub fn keys(&self) -> &LinkKeys {
        &self.keys
    }

    /// The token of a link to `media_id` of `app_id`, asked for with the API
    /// token `token_id`, until `expires_at` (rounded down to the second),
    /// signed by the active key.
    ///
    /// Ids the service accepts fit (app ids are at most 64 bytes, media ids
    /// 128, token ids 16); an id over 255 bytes cannot be written, and
    /// panics.
    pub fn token(
        &self,
        app_id: &AppId,
        media_id: &MediaId,
        token_id: &TokenId,
        expires_at: Millis,
        disposition: Disposition,
    ) -> String {
        let key = &self.keys.keys[0];
        let mut bytes = vec![VERSION];
        for field in [
            key.id.as_str(),
            app_id.as_str(),
            media_id.as_str(),
            token_id.as_str(),
        ] {
            let len = u8::try_from(field.len()).expect("ids are at most 255 bytes");
            bytes.push(len);
            bytes.extend_from_slice(field.as_bytes());
        }
        let seconds = u64::try_from(expires_at.div_euclid(1000)).unwrap_or(0);
        bytes.extend_from_slice(&seconds.to_be_bytes());
        bytes.push(disposition.byte());
        let tag = signed(&key.mac, &bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The link `token` grants at `now`: `Invalid` unless it is well formed
    /// and its tag verifies (in constant time) under the key it names;
    /// then `Expired` once `now` has reached its expiry.
    pub fn verify(&self, token: &str, now: Millis) -> Result<Link, LinkError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(LinkError::Invalid);
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| LinkError::Invalid)?;
        let fields = Fields::parse(&bytes).ok_or(LinkError::Invalid)?;
        let key = self.keys.find(fields.key_id).ok_or(LinkError::Invalid)?;
        if !tag_matches(signed(&key.mac, fields.signed), fields.tag) {
            return Err(LinkError::Invalid);
        }
        // Signed, so made by this service; checked all the same.
        let app_id = std::str::from_utf8(fields.app_id)
            .ok()
            .filter(|id| could_be_app_id(id))
            .ok_or(LinkError::Invalid)?;
        let media_id = std::str::from_utf8(fields.media_id)
            .ok()
            .and_then(|id| plausible(id).ok())
            .ok_or(LinkError::Invalid)?;
        let token_id = match fields.token_id {
            Some(id) => Some(
                std::str::from_utf8(id)
                    .ok()
                    .filter(|id| !id.is_empty())
                    .map(TokenId::new)
                    .ok_or(LinkError::Invalid)?,
            ),
            None => None,
        };
        let expires_at = i64::try_from(fields.expires)
            .ok()
            .and_then(|seconds| seconds.checked_mul(1000))
            .ok_or(LinkError::Invalid)?;
        if now >= expires_at {
            return Err(LinkError::Expired);
        }
        Ok(Link {
            app_id: AppId::new(app_id),
            media_id,
            token_id,
            expires_at,
            disposition: fields.disposition,
        })
    }
}

/// The MAC of `bytes` under `key`, after the domain label.
fn signed(key: &HmacSha256, bytes: &[u8]) -> HmacSha256 {
    let mut mac = key.clone();
    mac.update(DOMAIN);
    mac.update(bytes);
    mac
}

/// Whether `presented` is the tag `mac` computes. `verify_slice` compares
/// in constant time, so how long a refusal takes says nothing of how much
/// of a forged tag was right.
fn tag_matches(mac: HmacSha256, presented: &[u8]) -> bool {
    mac.verify_slice(presented).is_ok()
}

/// A token's fields, as borrowed from its bytes.
struct Fields<'a> {
    key_id: &'a [u8],
    app_id: &'a [u8],
    media_id: &'a [u8],
    /// `None` in a version 1 link.
    token_id: Option<&'a [u8]>,
    expires: u64,
    disposition: Disposition,
    /// Every byte before the tag.
    signed: &'a [u8],
    tag: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The fields of a token's bytes, if they are laid out as version 2
    /// (or 1) lays them out, to the last byte.
    fn parse(bytes: &'a [u8]) -> Option<Fields<'a>> {
        let (&version, mut rest) = bytes.split_first()?;
        if version != VERSION && version != VERSION_WITHOUT_TOKEN {
            return None;
        }
        let mut field = || -> Option<&'a [u8]> {
            let (&len, tail) = rest.split_first()?;
            let (value, tail) = tail.split_at_checked(usize::from(len))?;
            rest = tail;
            Some(value)
        };
        let (key_id, app_id, media_id) = (field()?, field()?, field()?);
        let token_id = if version == VERSION { Some(field()?) } else { None };
        let (expires, rest) = rest.split_first_chunk::<8>()?;
        let (&disposition, tag) = rest.split_first()?;
        if tag.len() != TAG_LEN {
            return None;
        }
        Some(Fields {
            key_id,
            app_id,
            media_id,
            token_id,
            expires: u64::from_be_bytes(*expires),
            disposition: Disposition::from_byte(disposition)?,
            signed: &bytes[..bytes.len() - TAG_LEN],
            tag,
        })
    }
}

/// The scheme and host (and any path prefix) links start with, without a
/// trailing slash: `links.public_base_url` when set; else the request's
/// own, `http://` and its `Host`, or `X-Forwarded-Proto` and
/// `X-Forwarded-Host` where a trusted proxy sent them (from anyone else
/// they were dropped on the way in: `drop_untrusted_forwarding`). A
/// request that names no host is 400.
pub fn base_url(state: &ApiState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(base) = &state.public_base_url {
        return Ok(base.trim_end_matches('/').to_owned());
    }
    let host = first_value(headers, &X_FORWARDED_HOST)
        .or_else(|| first_value(headers, &header::HOST))
        .filter(|host| plausible_host(host))
        .ok_or_else(|| {
            ApiError::bad_request(
                "Cannot tell this service's address for the link: send a Host header, \
                 or configure links.public_base_url",
            )
        })?;
    let scheme = match first_value(headers, &X_FORWARDED_PROTO) {
        Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    Ok(format!("{scheme}://{}", host.to_ascii_lowercase()))
}

/// `{base}/l/{token}`: a link to `media_id` of `app_id`, asked for with the
/// API token `token_id`, until `expires_at`; 404 when links are not enabled.
pub fn url(
    state: &ApiState,
    headers: &HeaderMap,
    app_id: &AppId,
    media_id: &MediaId,
    token_id: &TokenId,
    expires_at: Millis,
    disposition: Disposition,
) -> Result<String, ApiError> {
    let signer = signer(state)?;
    let token = signer.token(app_id, media_id, token_id, expires_at, disposition);
    Ok(format!("{}{LINK_PATH}{token}", base_url(state, headers)?))
}

/// The link signer, or 404 when links are not enabled.
pub(crate) fn signer(state: &ApiState) -> Result<&Arc<LinkSigner>, ApiError> {
    state
        .links
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, LINKS_DISABLED))
}

static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The first entry of a header's first line (a proxy chain lists the
/// address the client used first), trimmed.
fn first_value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then_some(first)
}

/// Whether `host` is a host name or address with an optional port, and
/// nothing that would change what a URL built on it means.
fn plausible_host(host: &str) -> bool {
    (1..=255).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'))
}

/// Drops `X-Forwarded-Host` and `X-Forwarded-Proto` from a request whose
/// peer is not one of `server.trusted_proxies`: `base_url` may then believe
/// them wherever they are left, and a client cannot choose the host of the
/// links it is handed.
pub async fn drop_untrusted_forwarding(State(state): State<ApiState>, mut request: Request) -> Request {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if !state.limits.trusts(peer) {
        let headers = request.headers_mut();
        headers.remove(&X_FORWARDED_HOST);
        headers.remove(&X_FORWARDED_PROTO);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    /// 2030-01-01T00:00:00Z, in milliseconds.
    const LATER: Millis = 1_893_456_000_000;

    fn signer(spec: &str) -> LinkSigner {
        LinkSigner::new(LinkKeys::parse(spec).unwrap(), DAY)
    }

    /// The API token a link is asked for with.
    fn issuer() -> TokenId {
        TokenId::new("0123456789abcdef")
    }

    fn ids() -> (AppId, MediaId) {
        (
            AppId::new("0b5e2c4e-6a53-4f4e-9d2b-6f0f7e1c2a10"),
            MediaId::new("1234567890123456789"),
        )
    }

    #[test]
    fn a_link_round_trips() {
        let s = signer(&LinkKeys::generate_line("k1"));
        let (app, media) = ids();
        let token = s.token(&app, &media, &issuer(), LATER + 999, Disposition::Inline);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        let link = s.verify(&token, LATER - 1).unwrap();
        assert_eq!(
            link,
            Link {
                app_id: app,
                media_id: media,
                token_id: Some(issuer()),
                expires_at: LATER,
                disposition: Disposition::Inline
            },
            "the expiry rounds down to the second"
        );
        assert_eq!(s.verify(&token, LATER), Err(LinkError::Expired));
    }

    #[test]
    fn any_app_and_media_id_round_trips() {
        let s = signer(&LinkKeys::generate_line("k1"));
        let apps = ["a", "legacy_app.v2", "A-Z.0-9_", &"a".repeat(64)];
        let media = [
            "m",
            "4c3f0b1e-52c8-4c57-9d2a-3f1c2b7a9e10",
            "été ☃ / ? # % + =",
            &"é".repeat(64),
            &"x".repeat(128),
        ];
        for app in apps {
            for medium in media {
                let (app, medium) = (AppId::new(app), MediaId::new(medium));
                for disposition in [Disposition::Inline, Disposition::Attachment] {
                    let link = s
                        .verify(&s.token(&app, &medium, &issuer(), LATER, disposition), 0)
                        .unwrap();
                    assert_eq!((&link.app_id, &link.media_id), (&app, &medium));
                    assert_eq!(link.disposition, disposition);
                }
            }
        }
        let longest_key = signer(&LinkKeys::generate_line(&"k".repeat(64)));
        let longest = longest_key.token(
            &AppId::new("a".repeat(64)),
            &MediaId::new("x".repeat(128)),
            &issuer(),
            LATER,
            Disposition::Inline,
        );
        assert_eq!(longest.len(), 424);
        assert!(longest.len() <= MAX_TOKEN_LEN);
        assert!(longest_key.verify(&longest, 0).is_ok());
    }

    /// The token's bytes and the offsets of its fields, to change them.
    fn decoded(token: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(token).unwrap()
    }

    fn encoded(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_change_to_any_field_is_refused() {
        let s = signer(&format!(
            "k1:{},k2:{}",
            &LinkKeys::generate_line("x")[2..],
            &LinkKeys::generate_line("y")[2..]
        ));
        let (app, media) = ids();
        let token = s.token(&app, &media, &issuer(), LATER, Disposition::Attachment);
        let bytes = decoded(&token);
        // version, "k1", app (36), media (19), token (16), expiry,
        // disposition, tag
        let key_id = 2..4;
        let app_at = 5;
        let media_at = app_at + 36 + 1;
        let token_at = media_at + 19 + 1;
        let expiry_at = token_at + 16;
        let disposition_at = expiry_at + 8;
        let tag_at = disposition_at + 1;
        assert_eq!(&bytes[key_id.clone()], b"k1");
        assert_eq!(bytes.len(), tag_at + TAG_LEN);

        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut changed = |case, at: usize, to: u8| {
            let mut bytes = bytes.clone();
            bytes[at] = to;
            cases.push((case, bytes));
        };
        changed("key id: another configured key", key_id.end - 1, b'2');
        changed("app id", app_at, b'1');
        changed("media id", media_at, b'9');
        changed("token id", token_at, b'f');
        changed("token id length", token_at - 1, 15);
        changed("expiry", expiry_at + 4, bytes[expiry_at + 4] ^ 0x40);
        changed("disposition", disposition_at, Disposition::Inline.byte());
        changed("disposition: unknown", disposition_at, 7);
        changed("signature: first byte", tag_at, bytes[tag_at] ^ 1);
        changed(
            "signature: last byte",
            tag_at + TAG_LEN - 1,
            bytes[tag_at + TAG_LEN - 1] ^ 1,
        );
        changed("version: the layout without a token id", 0, VERSION_WITHOUT_TOKEN);
        changed("version: unknown", 0, 3);
        cases.push(("signature cut", bytes[..bytes.len() - 1].to_vec()));
        cases.push(("a byte past the tag", [bytes.as_slice(), &[0]].concat()));
        cases.push(("empty", Vec::new()));
        for (case, bytes) in cases {
            assert_eq!(s.verify(&encoded(&bytes), 0), Err(LinkError::Invalid), "{case}");
        }
        for (case, token) in [
            ("padded", format!("{token}=")),
            ("standard base64", token.replace('-', "+").replace('_', "/") + "+"),
            ("not base64", "!!!!".to_owned()),
            ("too long", "A".repeat(MAX_TOKEN_LEN + 1)),
            ("empty", String::new()),
        ] {
            assert_eq!(s.verify(&token, 0), Err(LinkError::Invalid), "{case}");
        }
        assert!(s.verify(&token, 0).is_ok(), "the untouched link verifies");
    }

    /// A version 1 link (made before links named their API token) still
    /// verifies, with no token to check, and a forged one does not.
    #[test]
    fn a_version_1_link_verifies_without_a_token() {
        let s = signer(&LinkKeys::generate_line("k1"));
        let (app, media) = ids();
        let mut bytes = vec![VERSION_WITHOUT_TOKEN];
        for field in ["k1", app.as_str(), media.as_str()] {
            bytes.push(field.len() as u8);
            bytes.extend_from_slice(field.as_bytes());
        }
        bytes.extend_from_slice(&(LATER as u64 / 1000).to_be_bytes());
        bytes.push(Disposition::Attachment.byte());
        let tag = signed(&s.keys.keys[0].mac, &bytes).finalize().into_bytes();
        let genuine = [bytes.as_slice(), &tag].concat();
        let link = s.verify(&encoded(&genuine), 0).unwrap();
        assert_eq!((link.app_id, link.media_id, link.token_id), (app, media, None));
        let mut forged = genuine;
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(s.verify(&encoded(&forged), 0), Err(LinkError::Invalid));
    }

    #[test]
    fn a_link_of_an_unknown_key_is_refused() {
        let ours = signer(&LinkKeys::generate_line("k1"));
        let theirs = signer(&LinkKeys::generate_line("k1"));
        let stranger = signer(&LinkKeys::generate_line("k9"));
        let (app, media) = ids();
        for (case, other) in [
            ("the same id, other material", &theirs),
            ("another id", &stranger),
        ] {
            let token = other.token(&app, &media, &issuer(), LATER, Disposition::Inline);
            assert_eq!(ours.verify(&token, 0), Err(LinkError::Invalid), "{case}");
        }
    }

    /// An expired link is told apart only once its tag verifies: a forged
    /// one with a past expiry is invalid, not expired.
    #[test]
    fn only_a_genuine_link_is_expired() {
        let s = signer(&LinkKeys::generate_line("k1"));
        let (app, media) = ids();
        let token = s.token(&app, &media, &issuer(), 1_000, Disposition::Inline);
        assert_eq!(s.verify(&token, 1_000), Err(LinkError::Expired));
        let mut bytes = decoded(&token);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(s.verify(&encoded(&bytes), 1_000), Err(LinkError::Invalid));
    }

    #[test]
    fn a_link_of_the_previous_key_verifies_while_that_key_is_configured() {
        let (old, new) = (LinkKeys::generate_line("old"), LinkKeys::generate_line("new"));
        let (app, media) = ids();
        let token = signer(&old).token(&app, &media, &issuer(), LATER, Disposition::Attachment);
        let rotated = signer(&format!("{new},{old}"));
        assert_eq!(rotated.keys().active_id(), "new");
        assert!(rotated.verify(&token, 0).is_ok());
        let fresh = rotated.token(&app, &media, &issuer(), LATER, Disposition::Attachment);
        assert_eq!(&decoded(&fresh)[2..5], b"new", "new links name the new key");
        assert_eq!(signer(&new).verify(&token, 0), Err(LinkError::Invalid));
        assert!(signer(&new).verify(&fresh, 0).is_ok());
    }

    /// The tag is compared by `Mac::verify_slice`, in constant time: no
    /// `==` on tag bytes, whose time would say how many leading bytes of a
    /// forged tag are right. (Timing cannot be measured reliably in a unit
    /// test; this pins the code that makes it so.)
    #[test]
    fn the_tag_is_compared_in_constant_time() {
        let source = include_str!("links.rs");
        let start = source.find("fn tag_matches(").unwrap();
        let body = &source[start..start + source[start..].find("\n}\n").unwrap()];
        assert!(body.contains("mac.verify_slice(presented)"), "{body}");
        assert!(!body.contains("=="), "{body}");
        let verify = &source[source.find("pub fn verify(").unwrap()..start];
        assert!(verify.contains("tag_matches("), "verify checks the tag there");
        assert!(!verify.contains(".tag =="), "{verify}");
    }

    #[test]
    fn keys_are_parsed_as_crypto_keys_are_and_never_shown() {
        let line = LinkKeys::generate_line("k1");
        let keys = LinkKeys::parse(&line).unwrap();
        let shown = format!("{keys:?}");
        assert!(shown.contains("k1") && !shown.contains(&line[3..]), "{shown}");
        let error = LinkKeys::parse("k1:AAAA").unwrap_err().to_string();
        assert_eq!(
            error,
            "links.keys: key \"k1\" must be 32 bytes of standard base64"
        );
        assert!(
            LinkKeys::parse("")
                .unwrap_err()
                .to_string()
                .starts_with("links.keys: ")
        );
    }

    #[test]
    fn hosts_that_would_change_the_url_are_refused() {
        for good in ["media.example.com", "127.0.0.1:8080", "[::1]:8080", "Host_1"] {
            assert!(plausible_host(good), "{good}");
        }
        for bad in ["", "a/b", "a@b", "a b", "a?b", "a#b", "évil.com"] {
            assert!(!plausible_host(bad), "{bad}");
        }
    }
}
