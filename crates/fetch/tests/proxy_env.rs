//! Proxies named in the environment are ignored: a proxy would connect on
//! the fetcher's behalf, to addresses the guard never judged. This test has
//! a binary of its own, as it sets process-wide environment variables.

use mediavault_fetch::origin::{Answer, Origin};
use mediavault_fetch::{FetchPolicy, Fetcher};

#[tokio::test]
async fn environment_proxies_are_not_used() {
    let origin = Origin::start(|_| Answer::file("direct")).await;
    let proxy = Origin::start(|_| Answer::file("through the proxy")).await;
    for name in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        // SAFETY: the only test of this binary; set before any other thread
        // of the test reads the environment.
        unsafe { std::env::set_var(name, proxy.url("")) };
    }
    let fetcher = Fetcher::new(FetchPolicy {
        allow_networks: vec!["127.0.0.1/32".parse().unwrap()],
        ..FetchPolicy::default()
    })
    .unwrap();
    let mut fetched = fetcher.fetch(&origin.url("/a.png")).await.unwrap();
    assert_eq!(fetched.chunk().await.unwrap().unwrap(), "direct");
    assert_eq!(proxy.connections(), 0);
}
