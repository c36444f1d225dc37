//! TOML texts through `Config::from_toml_str`: the embedded default with the
//! text layered over it, checked as at start-up.
//!
//! Asserts: no panic; an accepted configuration also yields its derived
//! settings (the checks ran); a refusal says what is wrong — it names the
//! key or section at fault, or the place of a TOML syntax error.
//!
//! The environment layer is not fuzzed: figment reads it only from the
//! process environment.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mediavault::config::Config;

/// The top-level sections; every key the checks name starts with one.
const SECTIONS: &[&str] = &[
    "server", "database", "blobs", "crypto", "media", "reaper", "limits", "admin", "log",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml_str(&text) {
        Ok(config) => {
            config.limit_settings().expect("checked by from_toml_str");
            config.reaper_settings().expect("checked by from_toml_str");
            // Secrets given as files would read whatever path the input
            // names; the inline ones are pure.
            if config.database.url_file.is_none() {
                config.database_url().expect("an inline database url");
            }
            if config.crypto.keys_file.is_none() {
                config.crypto_keys().expect("inline keys");
            }
            if config.blobs.secret_access_key_file.is_none() {
                config.blobs_secret_access_key().expect("an inline secret");
            }
            if config.admin.token_file.is_none() {
                let _ = config.admin_token();
            }
        }
        Err(error) => {
            let message = format!("{error:#}");
            assert!(says_what_is_wrong(&message), "unhelpful error: {message}");
        }
    }
});

fn says_what_is_wrong(message: &str) -> bool {
    let names_a_key = message.contains("for key")
        || SECTIONS.iter().any(|s| message.contains(&format!("{s}.")))
        || message.contains("unknown field")
        || message.contains("missing field");
    let places_a_syntax_error = message.contains("TOML parse error at line");
    names_a_key || places_a_syntax_error
}
