//! `mediavault-chaos`: robustness runs of the real service against stores of
//! its own, all on loopback.
//!
//! - `chaos`: uploads while Garage, PostgreSQL and mediavault itself are
//!   killed and restarted; then checks that every accepted file reads back
//!   intact and that nothing else was left behind (`make chaos`).
//! - `cluster`: a steady mix of requests to two replicas on a three-node
//!   Garage cluster while one node at a time is killed and brought back;
//!   every request must succeed (`make chaos-cluster`; `make chaos` runs it
//!   after `chaos`).
//! - `soak --duration 30m`: a steady mix of uploads, downloads, deletes and
//!   reaping, sampling the server's memory and descriptors (`make soak`).
//!
//! Each prints its figures, writes them to `bench/results/`, and exits
//! non-zero when the service failed a check.

mod chaos;
mod client;
mod cluster;
mod failover;
mod files;
mod garage;
mod load;
mod report;
mod services;
mod soak;
mod trend;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mediavault-chaos",
    about = "Fault-injection and soak runs of mediavault"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Uploads under store and service crashes; checks nothing is lost or orphaned.
    Chaos {
        #[command(flatten)]
        common: report::Common,
        #[command(flatten)]
        args: chaos::ChaosArgs,
    },
    /// A steady load on two replicas while a three-node Garage cluster loses one node at a time.
    Cluster {
        #[command(flatten)]
        common: report::Common,
        #[command(flatten)]
        args: cluster::ClusterArgs,
    },
    /// A long steady load with expiry and reaping; samples RSS and descriptors.
    Soak {
        #[command(flatten)]
        common: report::Common,
        #[command(flatten)]
        args: soak::SoakArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let outcome = runtime.block_on(async {
        let run = async {
            match &cli.command {
                Command::Chaos { common, args } => chaos::run(common, args).await,
                Command::Cluster { common, args } => cluster::run(common, args).await,
                Command::Soak { common, args } => soak::run(common, args).await,
            }
        };
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => signal.recv().await,
                Err(_) => std::future::pending().await,
            }
        };
        // On Ctrl-C or SIGTERM the run is dropped, and with it every process
        // it started and its temporary directory.
        tokio::select! {
            outcome = run => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            _ = terminate => Err(anyhow::anyhow!("terminated")),
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("mediavault-chaos: {error:#}");
            ExitCode::FAILURE
        }
    }
}
