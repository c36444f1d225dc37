//! The HTTP contract, checked at the router: each request goes through
//! `router(state)` as the server hands it over (the peer's address as
//! `ConnectInfo`, the body in pieces no larger than hyper's read buffer),
//! over a vault on SQLite and in-memory blobs, and each answer's status,
//! headers and body are compared exactly. The end-to-end suites in `tests/`
//! keep what needs a real process: raw framing, huge heads, stalled bodies,
//! and one case per group showing the binary answers the same.

mod by_url;
mod errors;
mod extractors;
mod gupshup;
mod links;
mod quota;
mod whatsapp;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use futures::StreamExt;
use mediavault_storage::{NewApp, Vault};
use serde_json::Value;
use tower::ServiceExt;

use crate::{ApiState, ConfiguredToken, LimitSettings, Limits, router};

/// The address requests come from unless a test says otherwise.
pub const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// hyper reads a request body into a buffer of this size (`MAX_BUF_SIZE` in
/// crates/mediavault/src/http.rs) and hands it on a piece at a time: the
/// next piece, and the end of the body, are not ready until the handler has
/// taken the one before and the connection has read on. The multipart
/// parser relies on that: it takes every piece that is ready at once (a
/// large body all ready would pass the framing limit in one go), and when
/// a small body's only piece and its end are ready together it reports the
/// body incomplete before finding the first boundary.
const BODY_PIECE: usize = 64 * 1024;

/// An app and one of its live tokens.
#[derive(Clone)]
pub struct AppKey {
    pub id: String,
    pub token: String,
}

/// The router over fresh stores, with one CAPI app of default settings.
pub struct Service {
    pub vault: Vault,
    pub state: ApiState,
    pub app: AppKey,
    router: Router,
    _dir: tempfile::TempDir,
}

impl Service {
    /// With the settings of `config/default.toml`, but for the upload
    /// rate: a test sends more uploads in a second than the default allows
    /// (a test of the rate sets its own).
    pub async fn new() -> Service {
        Service::with(|_| {}).await
    }

    /// With the state as `configure` leaves it.
    pub async fn with(configure: impl FnOnce(&mut ApiState)) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let vault = crate::testing::vault(dir.path()).await;
        vault.migrate().await.unwrap();
        let unlimited = NonZeroU32::new(u32::MAX).unwrap();
        let mut state = ApiState {
            admin_token: Some(ConfiguredToken::new("admin")),
            limits: Arc::new(Limits::new(LimitSettings {
                uploads_per_second: unlimited,
                upload_burst: unlimited,
                ..LimitSettings::default()
            })),
            ..ApiState::new(vault.clone())
        };
        configure(&mut state);
        let mut service = Service {
            vault,
            router: router(state.clone()),
            state,
            app: AppKey {
                id: String::new(),
                token: String::new(),
            },
            _dir: dir,
        };
        service.app = service.capi_app().await;
        service
    }

    /// A new app as `new` describes it, and a token for it.
    pub async fn app(&self, new: NewApp) -> AppKey {
        let app = self.vault.create_app(new).await.unwrap();
        let issued = self.vault.issue_token(&app.id, None).await.unwrap();
        AppKey {
            id: app.id.into_string(),
            token: issued.token,
        }
    }

    /// A new CAPI app with default settings.
    pub async fn capi_app(&self) -> AppKey {
        self.app(NewApp {
            name: "capi".into(),
            capi: true,
            ..NewApp::default()
        })
        .await
    }

    pub async fn send(&self, call: Call) -> Reply {
        self.send_request(call.into_request()).await
    }

    /// Sends a request built by the test (a body it watches, say); the
    /// peer's address is `CLIENT`.
    pub async fn send_request(&self, mut request: Request<Body>) -> Reply {
        if request.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
            request
                .extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(CLIENT, 50_000)));
        }
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Uploads `file` as `image/png` named `holiday photo "1".png` (the
    /// quotes escaped, as reqwest sends them, as the end-to-end fixture
    /// does) for the service's app; its media id.
    pub async fn upload(&self, file: &[u8]) -> String {
        let form = [
            text("file_type", b"image/png"),
            named_file(r#"holiday photo \"1\".png"#, file),
            end(),
        ]
        .concat();
        let reply = self.send(Call::upload(&self.app).multipart(form)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["mediaId"].as_str().unwrap().to_owned()
    }

    /// Media rows, after checking that each has its blob and no blob lacks a row.
    pub async fn stored(&self) -> usize {
        let mut rows = self.vault.referenced_blob_keys().await.unwrap();
        let mut blobs = self.vault.stored_blob_keys().await.unwrap();
        rows.sort();
        blobs.sort();
        assert_eq!(rows, blobs, "every row has its blob and no blob lacks a row");
        rows.len()
    }
}

/// `/partner/app/{app}/media{tail}`.
pub fn media_uri(app: &str, tail: &str) -> String {
    format!("/partner/app/{app}/media{tail}")
}

/// One request, built as a client sends it.
pub struct Call {
    method: Method,
    uri: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
    client: IpAddr,
}

impl Call {
    pub fn new(method: Method, uri: impl Into<String>) -> Call {
        Call {
            method,
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
            client: CLIENT,
        }
    }

    pub fn get(uri: impl Into<String>) -> Call {
        Call::new(Method::GET, uri)
    }

    /// An upload for `app` with its token.
    pub fn upload(app: &AppKey) -> Call {
        Call::new(Method::POST, media_uri(&app.id, "")).token(&app.token)
    }

    /// `method` on `/partner/app/{app}/media{tail}` with the app's token.
    pub fn media(method: Method, app: &AppKey, tail: &str) -> Call {
        Call::new(method, media_uri(&app.id, tail)).token(&app.token)
    }

    /// Adds a header line as given, bytes and all (repeated names are kept).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Call {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        let value = HeaderValue::from_bytes(value.as_ref()).unwrap();
        self.headers.push((name, value));
        self
    }

    pub fn token(self, token: &str) -> Call {
        self.header("token", token)
    }

    /// Drops every header of this name added so far.
    pub fn without(mut self, name: &str) -> Call {
        self.headers.retain(|(n, _)| n.as_str() != name);
        self
    }

    pub fn body(self, content_type: &str, body: Vec<u8>) -> Call {
        Call {
            body,
            ..self.header("content-type", content_type)
        }
    }

    /// `form` as `multipart/form-data` with `BOUNDARY`.
    pub fn multipart(self, form: Vec<u8>) -> Call {
        self.body(&form_content_type(), form)
    }

    /// The peer address the connection comes from.
    pub fn from(self, client: IpAddr) -> Call {
        Call { client, ..self }
    }

    fn into_request(self) -> Request<Body> {
        let has_length = self.headers.iter().any(|(n, _)| n == header::CONTENT_LENGTH);
        let length = self.body.len();
        let body = if self.body.is_empty() {
            Body::empty()
        } else {
            let pieces: Vec<Option<Bytes>> = self
                .body
                .chunks(BODY_PIECE)
                .map(|piece| Some(Bytes::copy_from_slice(piece)))
                .chain([None])
                .collect();
            // Not ready at first, each piece and the end alike.
            let paced = futures::stream::iter(pieces)
                .then(|piece| async move {
                    tokio::task::yield_now().await;
                    piece
                })
                .filter_map(|piece| async move { piece.map(Ok::<_, Infallible>) });
            Body::from_stream(paced)
        };
        let mut request = Request::builder()
            .method(self.method)
            .uri(self.uri)
            .body(body)
            .unwrap();
        let headers = request.headers_mut();
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        if length > 0 && !has_length {
            headers.insert(header::CONTENT_LENGTH, length.into());
        }
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(self.client, 50_000)));
        request
    }
}

/// A response as the router gave it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Fails unless this is `status` with exactly
    /// `{"message":"<message>","status":"error"}` as JSON.
    pub fn assert_error(&self, case: &str, status: StatusCode, message: &str) {
        assert_eq!(self.status, status, "{case}: {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"), "{case}");
        assert_eq!(self.text(), error_body(message), "{case}");
    }

    /// Fails unless this is `status` with `{"message":"…","status":"error"}`
    /// whose message starts with `prefix` and names one of `hints` (for the
    /// multipart parser's wording, which is not ours).
    pub fn assert_error_naming(&self, case: &str, status: StatusCode, prefix: &str, hints: &[&str]) {
        assert_eq!(self.status, status, "{case}: {}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"), "{case}");
        let json = self.json();
        assert_eq!(json.as_object().map(|o| o.len()), Some(2), "{case}: {json}");
        assert_eq!(json["status"], "error", "{case}: {json}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(prefix), "{case}: {message:?}");
        assert_eq!(self.text(), error_body(message), "{case}: message first");
        let lower = message.to_lowercase();
        assert!(
            hints.is_empty() || hints.iter().any(|h| lower.contains(&h.to_lowercase())),
            "{case}: {message:?} names none of {hints:?}"
        );
    }
}

/// The error body, byte for byte: the message, then the status.
pub fn error_body(message: &str) -> String {
    format!(
        r#"{{"message":{},"status":"error"}}"#,
        serde_json::to_string(message).unwrap()
    )
}

/// The prefix of every 400 for a body that is not the multipart form expected.
pub const MALFORMED: &str = "Malformed multipart/form-data request: ";

/// The 400 for a `file_type` the default list does not hold.
pub fn type_refused(received: &str) -> String {
    format!(
        "Param file must be a file with one of the following types: audio/aac, audio/mp4, audio/mpeg, \
         audio/amr, audio/ogg, audio/opus, application/vnd.ms-powerpoint, application/msword, \
         application/vnd.openxmlformats-officedocument.wordprocessingml.document, \
         application/vnd.openxmlformats-officedocument.presentationml.presentation, \
         application/vnd.openxmlformats-officedocument.spreadsheetml.sheet, application/pdf, \
         text/plain, application/vnd.ms-excel, image/jpeg, image/png, image/webp, video/mp4, \
         video/3gpp. Received file of type '{received}'."
    )
}

// ---------------------------------------------------------------------------
// Multipart bodies, byte for byte.

pub const BOUNDARY: &str = "XyZ";

pub fn form_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// One part: its header lines (no trailing CRLF) and its content.
pub fn part(headers: &[u8], content: &[u8]) -> Vec<u8> {
    let mut bytes = format!("--{BOUNDARY}\r\n").into_bytes();
    bytes.extend_from_slice(headers);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(content);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// A plain form field.
pub fn text(name: &str, value: &[u8]) -> Vec<u8> {
    part(
        format!("Content-Disposition: form-data; name=\"{name}\"").as_bytes(),
        value,
    )
}

/// The `file` part, named `a.png`, sent as `image/png`.
pub fn file(content: &[u8]) -> Vec<u8> {
    named_file("a.png", content)
}

pub fn named_file(filename: &str, content: &[u8]) -> Vec<u8> {
    part(
        format!("Content-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: image/png")
            .as_bytes(),
        content,
    )
}

/// The closing delimiter.
pub fn end() -> Vec<u8> {
    format!("--{BOUNDARY}--\r\n").into_bytes()
}

/// A valid upload of 5,000 bytes of PNG.
pub fn valid_form() -> Vec<u8> {
    [text("file_type", b"image/png"), file(&png_bytes(5000)), end()].concat()
}

/// `len` bytes that sniff as PNG (the signature and an IHDR chunk, then noise).
pub fn png_bytes(len: usize) -> Vec<u8> {
    const HEADER: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let n = HEADER.len().min(len);
    bytes[..n].copy_from_slice(&HEADER[..n]);
    bytes
}

/// Lowercase hex SHA-256, as ETags and info replies carry it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
