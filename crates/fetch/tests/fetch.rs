//! Fetches against real HTTP origins on loopback addresses, started by each
//! test. No test sends a packet off this machine: names are answered by
//! resolvers written here (standing in for a DNS server) or from
//! /etc/hosts (`localhost`), and every address involved is a loopback one.
//! Where loopback must be reachable, `allow_networks` opens 127.0.0.1/32
//! only; 127.0.0.2 then stands for an address the guard refuses.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mediavault_fetch::origin::{Answer, Origin};
use mediavault_fetch::{BadUrl, FetchError, FetchPolicy, Fetched, Fetcher, Lookup, Resolver};

fn net(text: &str) -> ipnet::IpNet {
    text.parse().unwrap()
}

/// The defaults, with 127.0.0.1 opened.
fn loopback_policy() -> FetchPolicy {
    FetchPolicy {
        allow_networks: vec![net("127.0.0.1/32")],
        ..FetchPolicy::default()
    }
}

fn fetcher(policy: FetchPolicy) -> Fetcher {
    Fetcher::new(policy).unwrap()
}

async fn read_all(mut fetched: Fetched) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    while let Some(chunk) = fetched.chunk().await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn fetch_error(fetcher: &Fetcher, url: &str) -> FetchError {
    match fetcher.fetch(url).await {
        Ok(fetched) => read_all(fetched).await.expect_err(url),
        Err(error) => error,
    }
}

/// `len` bytes of a recognisable pattern.
fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Answers each look-up of any name with the next list of `answers` (the
/// last one repeats) and counts the look-ups. It stands in for a DNS
/// server, whose answers an attacker controls.
struct ScriptedResolver {
    answers: Mutex<VecDeque<io::Result<Vec<IpAddr>>>>,
    lookups: AtomicUsize,
}

impl ScriptedResolver {
    fn new(answers: Vec<io::Result<Vec<IpAddr>>>) -> Arc<ScriptedResolver> {
        Arc::new(ScriptedResolver {
            answers: Mutex::new(answers.into()),
            lookups: AtomicUsize::new(0),
        })
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl Resolver for ScriptedResolver {
    fn lookup(&self, _host: &str) -> Lookup {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            match answers.front().unwrap() {
                Ok(addresses) => Ok(addresses.clone()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            }
        };
        Box::pin(async move { answer })
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Two origins on one port: `allowed` on 127.0.0.1, `denied` on
/// 127.0.0.2, so that a URL's port reaches either, by the address the
/// name resolves to.
async fn origin_pair(route: impl Fn(&str) -> Answer + Clone + Send + Sync + 'static) -> (Origin, Origin) {
    for _ in 0..20 {
        let allowed = Origin::start(route.clone()).await;
        let port = allowed.addr().port();
        if let Ok(denied) = Origin::bind(SocketAddr::new(ip("127.0.0.2"), port), route.clone()).await {
            return (allowed, denied);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

#[tokio::test]
async fn a_file_is_fetched_with_its_metadata_and_user_agent() {
    let body = pattern(300_000);
    let served = body.clone();
    let origin = Origin::start(move |_| Answer::File {
        headers: vec![
            ("Content-Type".into(), "image/png".into()),
            (
                "Content-Disposition".into(),
                "attachment; filename=\"plain.png\"; filename*=UTF-8''%C3%A9t%C3%A9.png".into(),
            ),
        ],
        body: served.clone(),
    })
    .await;
    let fetched = fetcher(loopback_policy())
        .fetch(&origin.url("/media/ignored.png"))
        .await
        .unwrap();
    assert_eq!(fetched.content_length, Some(300_000));
    assert_eq!(fetched.content_type.as_deref(), Some("image/png"));
    assert_eq!(fetched.filename.as_deref(), Some("été.png"));
    assert!(read_all(fetched).await.unwrap() == body);
    let heads = origin.request_heads();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_lowercase();
    assert!(head.starts_with("get /media/ignored.png http/1.1"), "{head}");
    assert!(
        head.contains(&format!("user-agent: mediavault/{}", env!("CARGO_PKG_VERSION"))),
        "{head}"
    );
}

#[tokio::test]
async fn without_content_disposition_the_name_is_the_last_url_segment() {
    let origin = Origin::start(|_| Answer::Chunked {
        body: Bytes::from_static(b"hello"),
    })
    .await;
    let fetched = fetcher(loopback_policy())
        .fetch(&origin.url("/a/holiday%20photo.png?x=1"))
        .await
        .unwrap();
    assert_eq!(fetched.content_length, None, "a chunked body declares no length");
    assert_eq!(fetched.filename.as_deref(), Some("holiday photo.png"));
    assert_eq!(read_all(fetched).await.unwrap(), b"hello");
}

#[tokio::test]
async fn an_answer_other_than_2xx_is_refused_with_its_status() {
    let origin = Origin::start(|path| match path {
        "/missing" => Answer::Status(404),
        "/broken" => Answer::Status(500),
        _ => Answer::Status(304),
    })
    .await;
    let fetcher = fetcher(loopback_policy());
    assert_eq!(
        fetch_error(&fetcher, &origin.url("/missing")).await,
        FetchError::Status(404)
    );
    assert_eq!(
        fetch_error(&fetcher, &origin.url("/broken")).await,
        FetchError::Status(500)
    );
    assert_eq!(
        fetch_error(&fetcher, &origin.url("/other")).await,
        FetchError::Status(304)
    );
    assert_eq!(
        FetchError::Status(404).to_string(),
        "the server answered HTTP 404"
    );
}

/// `/hop/N` redirects to `/hop/N-1`, and `/hop/0` to the file.
fn hops(path: &str) -> Answer {
    match path.strip_prefix("/hop/").map(|n| n.parse::<u32>().unwrap()) {
        Some(0) => Answer::Redirect("/files/final.png".into()),
        Some(n) => Answer::Redirect(format!("/hop/{}", n - 1)),
        None => Answer::file("the file"),
    }
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    let origin = Origin::start(hops).await;
    let fetcher = fetcher(loopback_policy());
    // /hop/2 → /hop/1 → /hop/0 → the file: three redirects.
    let fetched = fetcher.fetch(&origin.url("/hop/2")).await.unwrap();
    assert_eq!(
        fetched.filename.as_deref(),
        Some("final.png"),
        "named by the last hop"
    );
    assert_eq!(read_all(fetched).await.unwrap(), b"the file");
    assert_eq!(origin.request_heads().len(), 4);

    // Four redirects: the fourth is not followed.
    assert_eq!(
        fetch_error(&fetcher, &origin.url("/hop/3")).await,
        FetchError::TooManyRedirects
    );
    assert_eq!(origin.request_heads().len(), 4 + 4);

    let strict = self::fetcher(FetchPolicy {
        max_redirects: 0,
        ..loopback_policy()
    });
    assert_eq!(
        fetch_error(&strict, &origin.url("/hop/0")).await,
        FetchError::TooManyRedirects
    );
}

#[tokio::test]
async fn a_redirect_is_checked_like_the_first_url() {
    // `/to/N` redirects to the Nth target, known once the port is.
    let targets: Arc<Mutex<Vec<String>>> = Arc::default();
    let listed = targets.clone();
    let route = move |path: &str| {
        let n: usize = path.trim_start_matches("/to/").parse().unwrap();
        Answer::Redirect(listed.lock().unwrap()[n].clone())
    };
    let (allowed, denied) = origin_pair(route).await;
    let port = denied.addr().port();
    let cases = [
        (format!("http://127.0.0.2:{port}/x"), FetchError::DeniedAddress),
        (format!("http://0x7f000002:{port}/x"), FetchError::DeniedAddress),
        (
            format!("http://[::ffff:127.0.0.2]:{port}/x"),
            FetchError::DeniedAddress,
        ),
        (format!("http://[::1]:{port}/x"), FetchError::DeniedAddress),
        ("http://169.254.169.254/latest/".into(), FetchError::DeniedAddress),
        (
            format!("ftp://127.0.0.1:{port}/x"),
            FetchError::BadUrl(BadUrl::Scheme),
        ),
        (
            format!("gopher://127.0.0.1:{port}/x"),
            FetchError::BadUrl(BadUrl::Scheme),
        ),
        (
            format!("http://user:secret@127.0.0.1:{port}/x"),
            FetchError::BadUrl(BadUrl::Credentials),
        ),
    ];
    targets
        .lock()
        .unwrap()
        .extend(cases.iter().map(|(target, _)| target.clone()));
    let fetcher = fetcher(loopback_policy());
    for (n, (target, expected)) in cases.iter().enumerate() {
        let error = fetch_error(&fetcher, &allowed.url(&format!("/to/{n}"))).await;
        assert_eq!(error, *expected, "{target}");
    }
    assert_eq!(allowed.request_heads().len(), cases.len(), "no hop was followed");
    assert_eq!(denied.connections(), 0, "no hop reached the denied address");
}

#[tokio::test]
async fn a_silent_server_or_a_stalled_body_times_out() {
    let origin = Origin::start(|path| match path {
        "/silent" => Answer::Silent,
        _ => Answer::Stall {
            declared: 1000,
            body: Bytes::from_static(b"the first bytes"),
        },
    })
    .await;
    let fetcher = fetcher(FetchPolicy {
        timeout: Duration::from_millis(500),
        ..loopback_policy()
    });
    assert_eq!(
        fetch_error(&fetcher, &origin.url("/silent")).await,
        FetchError::Timeout
    );
    let fetched = fetcher.fetch(&origin.url("/stall")).await.unwrap();
    assert_eq!(read_all(fetched).await.unwrap_err(), FetchError::Timeout);
}

#[tokio::test]
async fn a_body_short_of_its_length_is_a_broken_transfer() {
    let origin = Origin::start(|_| Answer::Short {
        declared: 10_000,
        body: pattern(100),
    })
    .await;
    let fetched = fetcher(loopback_policy()).fetch(&origin.url("/")).await.unwrap();
    assert_eq!(fetched.content_length, Some(10_000));
    assert_eq!(read_all(fetched).await.unwrap_err(), FetchError::Body);
}

#[tokio::test]
async fn a_refused_connection_a_failed_handshake_and_an_unknown_name() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let fetcher = fetcher(loopback_policy());
    assert_eq!(
        fetch_error(&fetcher, &format!("http://127.0.0.1:{port}/")).await,
        FetchError::Connect
    );

    // A plain HTTP server where TLS is expected.
    let origin = Origin::start(|_| Answer::file("plain")).await;
    let https = origin.url("/a.png").replace("http://", "https://");
    assert_eq!(fetch_error(&fetcher, &https).await, FetchError::Tls);

    let unknown = Fetcher::with_resolver(
        loopback_policy(),
        ScriptedResolver::new(vec![Err(io::Error::other("no such name"))]),
    )
    .unwrap();
    assert_eq!(
        fetch_error(&unknown, "http://nowhere.test/").await,
        FetchError::Dns
    );
    let empty = Fetcher::with_resolver(loopback_policy(), ScriptedResolver::new(vec![Ok(vec![])])).unwrap();
    assert_eq!(fetch_error(&empty, "http://nowhere.test/").await, FetchError::Dns);
}

/// Loopback is denied by default, as a literal and as a name: the origin
/// never sees a connection. A name that resolves only to denied addresses
/// is refused as a name that does not resolve.
#[tokio::test]
async fn loopback_is_denied_by_default_without_a_connection() {
    let origin = Origin::start(|_| Answer::file("secret")).await;
    let fetcher = fetcher(FetchPolicy::default());
    let port = origin.addr().port();
    for (url, error) in [
        (origin.url("/"), FetchError::DeniedAddress),
        (format!("http://localhost:{port}/"), FetchError::DeniedName),
        (format!("http://0x7f.1:{port}/"), FetchError::DeniedAddress),
        (format!("http://2130706433:{port}/"), FetchError::DeniedAddress),
        (format!("http://0177.0.0.1:{port}/"), FetchError::DeniedAddress),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            FetchError::DeniedAddress,
        ),
    ] {
        assert_eq!(fetch_error(&fetcher, &url).await, error, "{url}");
    }
    assert_eq!(origin.connections(), 0);

    // Opened, the same origin is reached, by address and by name.
    let open = self::fetcher(loopback_policy());
    let fetched = open.fetch(&format!("http://localhost:{port}/")).await.unwrap();
    assert_eq!(read_all(fetched).await.unwrap(), b"secret");
    assert_eq!(origin.connections(), 1);

    // deny_networks closes what allow_networks opens.
    let closed = self::fetcher(FetchPolicy {
        deny_networks: vec![net("127.0.0.0/8")],
        ..loopback_policy()
    });
    assert_eq!(
        fetch_error(&closed, &origin.url("/")).await,
        FetchError::DeniedAddress
    );
    assert_eq!(origin.connections(), 1);
}

/// DNS rebinding: the name answers an allowed address first and a denied
/// one on any later look-up. The fetch looks the name up once and connects
/// to what that look-up was checked to be; a second fetch gets the denied
/// answer and is refused. The denied origin sees no connection.
#[tokio::test]
async fn a_name_that_rebinds_to_a_denied_address_never_reaches_it() {
    let (allowed, denied) = origin_pair(|_| Answer::file("from 127.0.0.1")).await;
    let port = allowed.addr().port();
    let resolver = ScriptedResolver::new(vec![Ok(vec![ip("127.0.0.1")]), Ok(vec![ip("127.0.0.2")])]);
    let fetcher = Fetcher::with_resolver(loopback_policy(), resolver.clone()).unwrap();
    let url = format!("http://media.test:{port}/a.png");

    let fetched = fetcher.fetch(&url).await.unwrap();
    assert_eq!(read_all(fetched).await.unwrap(), b"from 127.0.0.1");
    assert_eq!(
        resolver.lookups(),
        1,
        "one look-up per connection, no second one to connect with"
    );
    assert_eq!(allowed.connections(), 1);

    assert_eq!(fetch_error(&fetcher, &url).await, FetchError::DeniedName);
    assert_eq!(resolver.lookups(), 2);
    assert_eq!(denied.connections(), 0);
    assert_eq!(allowed.connections(), 1);
}

/// A name with denied and allowed addresses: only the allowed ones are
/// connected to, whatever their order; with only denied ones, nothing is.
#[tokio::test]
async fn of_a_names_addresses_only_the_allowed_are_connected_to() {
    let (allowed, denied) = origin_pair(|_| Answer::file("from 127.0.0.1")).await;
    let port = allowed.addr().port();
    let mixed = ScriptedResolver::new(vec![Ok(vec![
        ip("127.0.0.2"),
        ip("::1"),
        ip("127.0.0.1"),
        ip("169.254.169.254"),
    ])]);
    let fetcher = Fetcher::with_resolver(loopback_policy(), mixed).unwrap();
    for _ in 0..3 {
        let fetched = fetcher
            .fetch(&format!("http://media.test:{port}/"))
            .await
            .unwrap();
        assert_eq!(read_all(fetched).await.unwrap(), b"from 127.0.0.1");
    }
    assert_eq!(allowed.connections(), 3);

    let only_denied = ScriptedResolver::new(vec![Ok(vec![ip("127.0.0.2"), ip("10.0.0.1")])]);
    let fetcher = Fetcher::with_resolver(loopback_policy(), only_denied).unwrap();
    assert_eq!(
        fetch_error(&fetcher, &format!("http://media.test:{port}/")).await,
        FetchError::DeniedName
    );

    // A redirect to a name is checked when it resolves.
    let rebinding = ScriptedResolver::new(vec![Ok(vec![ip("127.0.0.2")])]);
    let redirecting = Origin::start(move |_| Answer::Redirect(format!("http://evil.test:{port}/"))).await;
    let fetcher = Fetcher::with_resolver(loopback_policy(), rebinding).unwrap();
    assert_eq!(
        fetch_error(&fetcher, &redirecting.url("/")).await,
        FetchError::DeniedName
    );
    assert_eq!(denied.connections(), 0);
}

#[tokio::test]
async fn a_disabled_fetcher_fetches_nothing() {
    let origin = Origin::start(|_| Answer::file("x")).await;
    let fetcher = fetcher(FetchPolicy {
        enabled: false,
        ..loopback_policy()
    });
    assert!(!fetcher.enabled());
    assert_eq!(
        fetch_error(&fetcher, &origin.url("/")).await,
        FetchError::Disabled
    );
    assert_eq!(origin.connections(), 0);
}

/// The text of every class says what failed, and nothing of where.
#[test]
fn messages_name_the_class_only() {
    let all = [
        FetchError::Disabled,
        FetchError::BadUrl(BadUrl::Invalid),
        FetchError::BadUrl(BadUrl::Scheme),
        FetchError::BadUrl(BadUrl::Credentials),
        FetchError::DeniedAddress,
        FetchError::DeniedName,
        FetchError::Dns,
        FetchError::Connect,
        FetchError::Timeout,
        FetchError::Tls,
        FetchError::Status(503),
        FetchError::TooManyRedirects,
        FetchError::Body,
    ];
    let messages: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "fetching by URL is turned off",
            "not a valid URL",
            "only http and https URLs can be fetched",
            "URLs with credentials are not allowed",
            "address not allowed",
            "host name not found",
            "host name not found",
            "could not connect",
            "timed out",
            "TLS handshake failed",
            "the server answered HTTP 503",
            "too many redirects",
            "the transfer broke off",
        ]
    );
}
