//! `mediavault serve`: bind, announce, serve, and drain on shutdown.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use mediavault::config::Config;
use mediavault_api::{ApiState, ConfiguredToken, Limits, LinkKeys, LinkSigner, Slots, router};
use mediavault_storage::{DatabaseUrl, Vault};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::connections::{ConnectionLimits, Connections, raise_open_file_limit};
use crate::embedded;

pub async fn serve(config: &Config, vault: Vault) -> anyhow::Result<()> {
    let limits = config.limit_settings()?;
    let connection_limits = ConnectionLimits {
        total: config.server.max_connections,
        per_client: config.server.max_connections_per_client,
        exempt: limits.trusted_proxies.clone(),
    };
    let connection_limits =
        connection_limits.within_open_files(raise_open_file_limit(), config.open_files_reserved());
    let admin_token = config
        .admin_token()?
        .map(|token| ConfiguredToken::new(token.expose_secret()));
    let metrics_token = config
        .metrics_token()?
        .map(|token| ConfiguredToken::new(token.expose_secret()));
    let dev = match (config.database_url()?, config.wants_development_key()?) {
        (DatabaseUrl::Sqlite(url), true) => Some(embedded::dev_app(&vault, &url).await?),
        _ => None,
    };
    let links = link_signer(config)?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    if let Some(dev) = &dev {
        announce_dev_app(dev, addr);
    }
    // Scripts and tests read this line to learn the port: print it only once bound.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, "serving");

    let reaper = if config.reaper.enabled {
        Some(mediavault_reaper::spawn(vault.clone(), config.reaper_settings()?))
    } else {
        None
    };
    let metrics = install_metrics()?;
    // A recorder installed by hand drains its histograms' samples only
    // when rendered or kept up: without a scrape they would pile up for
    // ever, a few bytes a request. Aborted with the task at exit.
    let _metrics_upkeep = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
        let metrics = metrics.clone();
        async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP_EVERY);
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        }
    }));
    let interrupt = tokio_util::sync::CancellationToken::new();
    let app = router(ApiState {
        vault: vault.clone(),
        render_metrics: Some(Arc::new(move || metrics.render())),
        uploads: Arc::new(Slots::uploads(
            config.server.max_concurrent_uploads,
            config.uploads_per_app(),
        )),
        downloads: Arc::new(Slots::downloads(
            config.server.max_concurrent_downloads,
            config.downloads_per_app(),
        )),
        idle_timeout: config.server.idle_timeout,
        min_upload_rate: config.min_upload_rate(),
        min_download_rate: config.min_download_rate(),
        shutdown: interrupt.clone(),
        limits: Arc::new(Limits::new(limits)),
        admin_token,
        metrics_token,
        fetcher: mediavault_fetch::Fetcher::new(config.fetch_policy()?)?,
        links,
        public_base_url: config.public_base_url()?,
    });
    let shutdown_timeout = config.server.shutdown_timeout;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let timeouts = crate::http::Timeouts {
        header: config.server.idle_timeout,
        send: config.server.send_timeout,
    };
    let stop = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = stop_tx.send(true);
    };
    let server = crate::http::serve(
        listener,
        app,
        timeouts,
        Connections::new(connection_limits),
        stop,
        interrupt.clone(),
    );
    let mut server = std::pin::pin!(server);
    let mut stopping = stop_rx;
    tokio::select! {
        () = &mut server => {}
        _ = stopping.wait_for(|stop| *stop) => {
            if tokio::time::timeout(shutdown_timeout, &mut server).await.is_err() {
                // Uploads still running are told to stop: each undoes what it
                // stored and answers 503, so nothing half-written is left.
                // Downloads still running are cut.
                tracing::warn!(?shutdown_timeout, "requests still running after the shutdown timeout; interrupting");
                interrupt.cancel();
                if tokio::time::timeout(ABORT_GRACE, &mut server).await.is_err() {
                    tracing::warn!("requests still running after interruption; exiting");
                }
            }
        }
    }
    if let Some(reaper) = reaper {
        reaper.abort();
    }
    vault.close().await;
    Ok(())
}

/// The signer of links: under `links.keys`; in the embedded default (SQLite
/// and no keys configured) under a development key; otherwise none, and
/// links are off.
fn link_signer(config: &Config) -> anyhow::Result<Option<Arc<LinkSigner>>> {
    let keys = match (
        config.links_keys()?,
        config.database_url()?,
        config.crypto_keys()?,
    ) {
        (Some(spec), _, _) => LinkKeys::parse(spec.expose_secret())?,
        (None, DatabaseUrl::Sqlite(url), None) => embedded::dev_link_keys(&url)?,
        (None, _, _) => {
            tracing::warn!("signed links are off: configure links.keys (or links.keys_file) to turn them on");
            return Ok(None);
        }
    };
    tracing::info!(active_key = keys.active_id(), max_ttl = ?config.links.max_ttl, "signed links are on");
    Ok(Some(Arc::new(LinkSigner::new(keys, config.links.max_ttl))))
}

/// Tells the developer how to upload to the development app. The token is
/// a secret: it is printed only on the start that issued it; later starts
/// read it from its file in the command instead, so it never lands in the
/// terminal or a log again.
fn announce_dev_app(dev: &embedded::DevApp, addr: std::net::SocketAddr) {
    let file = dev.token_file.display();
    let (saved, header) = match &dev.new_token {
        Some(token) => (
            format!("its token is saved in {file} and shown only this once"),
            format!("'token: {token}'"),
        ),
        None => (
            format!("its token is in {file}"),
            format!("\"token: $(cat {file})\""),
        ),
    };
    eprintln!(
        "\nDevelopment app {id} is ready; {saved}. Upload a file with:\n\n  \
         curl --location --request POST 'http://{addr}/partner/app/{id}/media' \\\n    \
         --header {header} \\\n    \
         --form 'file_type=\"text/plain\"' \\\n    \
         --form 'file=@\"README.md\"'\n",
        id = dev.app.id
    );
}

/// How often the metrics recorder drains histogram samples into buckets
/// (the exporter's own default where it spawns its upkeep).
const METRICS_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The Prometheus recorder behind `/metrics`; durations get histogram buckets.
fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    const SECONDS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .install_recorder()?)
}

/// After the drain time, how long interrupted uploads get to undo themselves.
const ABORT_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
