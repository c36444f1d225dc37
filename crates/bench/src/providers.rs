//! Configured keys against KEKs in a PKCS#11 token, in one run: the same
//! stores (Postgres + Garage) and app, served with `crypto.keys` and with
//! `crypto.provider = "pkcs11"` (the SoftHSM2 token of
//! `scripts/test-services.sh`), the sides alternating which goes first over
//! `rounds`; each measures 16 KiB uploads at 16 clients and 100 MiB uploads.
//! The token wraps every file's data key, so the small uploads show what its
//! round trip costs a file.

use std::path::Path;

use serde_json::json;

use crate::clients::MediaClient;
use crate::report::{Figure, Report, RunStart, Target};
use crate::scenarios::{self, UploadRates};
use crate::server::{self, Server};
use crate::stores::{Backend, Stores, env};

/// What to measure on each side.
pub struct Plan {
    pub small_size: usize,
    pub small_count: usize,
    pub concurrency: usize,
    pub large_size: usize,
    pub large_reps: usize,
    pub rounds: usize,
}

/// The settings that serve a KEK labelled `label` from the test token.
fn token_settings(label: Option<&str>) -> anyhow::Result<Vec<(String, String)>> {
    let mut settings = vec![
        (
            "MEDIAVAULT__CRYPTO__PKCS11__MODULE".to_owned(),
            env("MEDIAVAULT_TEST_PKCS11_MODULE")?,
        ),
        (
            "MEDIAVAULT__CRYPTO__PKCS11__TOKEN_LABEL".to_owned(),
            env("MEDIAVAULT_TEST_PKCS11_TOKEN")?,
        ),
        // Quoted: digits alone would be read as a number.
        (
            "MEDIAVAULT__CRYPTO__PKCS11__PIN".to_owned(),
            format!("{:?}", env("MEDIAVAULT_TEST_PKCS11_PIN")?),
        ),
    ];
    if let Some(label) = label {
        settings.push(("MEDIAVAULT__CRYPTO__PROVIDER".into(), "pkcs11".into()));
        settings.push(("MEDIAVAULT__CRYPTO__PKCS11__KEYS".into(), format!("[{label:?}]")));
    }
    Ok(settings)
}

/// One side's measure, on stores of its own (a service with configured
/// keys refuses a database whose media the token's key wrapped): serves
/// them with `settings` added, measures, removes them.
async fn measure(binary: &Path, settings: &[(String, String)], plan: &Plan) -> anyhow::Result<UploadRates> {
    let mut stores = Stores::create(Backend::PostgresS3).await?;
    stores.server_env.extend(settings.iter().cloned());
    let result = measure_on(binary, &stores, plan).await;
    let cleaned = stores.cleanup().await;
    let rates = result?;
    cleaned?;
    Ok(rates)
}

async fn measure_on(binary: &Path, stores: &Stores, plan: &Plan) -> anyhow::Result<UploadRates> {
    let (app_id, token) = server::app_and_token(binary, stores)?;
    let mut server = Server::start(binary, stores)?;
    let media = MediaClient::new(&server.base_url, &app_id, &token)?;
    // Connections and the token's sessions open before anything is timed.
    for _ in 0..plan.concurrency {
        let file = crate::clients::png_file(plan.small_size);
        let id = media.upload(file.clone()).await?;
        media.download(&id, &file).await?;
        media.delete(&id).await?;
    }
    let rates = scenarios::uploads(
        server.pid(),
        &media,
        (plan.small_size, plan.small_count, plan.concurrency),
        (plan.large_size, plan.large_reps),
    )
    .await?;
    server.check_running()?;
    Ok(rates)
}

pub async fn compare(binary: &Path, plan: &Plan, command_line: &str) -> anyhow::Result<Report> {
    let start = RunStart::now(command_line);
    // The token's key, made once (through a CLI that needs stores to read
    // its configuration from; no database is touched).
    let label = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let stores = Stores::create(Backend::PostgresS3).await?;
    let made = server::cli_with(
        binary,
        &stores,
        &token_settings(None)?,
        &["keys", "generate", "--provider", "pkcs11", "--label", &label],
    );
    let settings = server::settings(&stores);
    stores.cleanup().await?;
    eprintln!("  token key {label}: {}", made?);
    let hsm = token_settings(Some(&label))?;
    let (mut configured, mut pkcs11) = (Vec::new(), Vec::new());
    for round in 0..plan.rounds.max(1) {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                eprintln!("== key-providers round {round}: configured keys");
                configured.push(measure(binary, &[], plan).await?);
            } else {
                eprintln!("== key-providers round {round}: pkcs11");
                pkcs11.push(measure(binary, &hsm, plan).await?);
            }
        }
    }
    Ok(start.report(
        "key-providers",
        "raw = the same server on like stores with configured keys (crypto.keys); mediavault = \
         with crypto.provider = \"pkcs11\", a SoftHSM2 token wrapping each data key",
        settings,
        figures(plan, &configured, &pkcs11),
        json!({
            "configured": configured.iter().map(|r| &r.samples).collect::<Vec<_>>(),
            "pkcs11": pkcs11.iter().map(|r| &r.samples).collect::<Vec<_>>(),
        }),
    ))
}

/// The token side against the configured side: the best of the rounds.
fn figures(plan: &Plan, configured: &[UploadRates], pkcs11: &[UploadRates]) -> Vec<Figure> {
    let best = |rates: &[UploadRates], of: fn(&UploadRates) -> f64| rates.iter().map(of).fold(0.0, f64::max);
    let least = |rates: &[UploadRates], of: fn(&UploadRates) -> f64| {
        rates.iter().map(of).fold(f64::INFINITY, f64::min)
    };
    let small = format!(
        "{} KiB uploads, {} clients",
        plan.small_size / 1024,
        plan.concurrency
    );
    vec![
        Figure::against(
            format!("{small}, throughput, best of {}", plan.rounds),
            "req/s",
            best(pkcs11, |r| r.small_per_second),
            best(configured, |r| r.small_per_second),
            Some(Target::RatioAtLeast(0.9)),
        ),
        Figure::against(
            format!("{small}, p99 latency, least of {}", plan.rounds),
            "ms",
            least(pkcs11, |r| r.small_p99_ms),
            least(configured, |r| r.small_p99_ms),
            None,
        ),
        Figure::against(
            format!(
                "upload {} MiB, best median of {}",
                plan.large_size >> 20,
                plan.rounds
            ),
            "MiB/s",
            best(pkcs11, |r| r.large_mib_s),
            best(configured, |r| r.large_mib_s),
            Some(Target::RatioAtLeast(0.9)),
        ),
    ]
}
