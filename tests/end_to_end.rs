//! The end-to-end suites, one module each, in one test binary: each starts
//! the real `mediavault` binary (`support`) against real PostgreSQL and
//! Garage, or SQLite and files, and speaks to it over HTTP or its CLI.

mod support;

mod admin;
mod bad_input;
mod by_url;
mod cli;
mod conformance;
mod downloads;
mod file_types;
mod hsm;
mod key_rotation;
mod lifecycle;
mod links;
mod operations;
mod quotas;
mod rate_limits;
mod reaper;
mod security;
mod upload;
mod whatsapp;
mod whatsapp_client;
