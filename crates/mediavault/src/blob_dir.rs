//! A local blob directory belongs to the blob store alone. The store lists
//! and sweeps only its own prefix in it, but a directory that also holds the
//! database or a secret invites a `blobs.url` one level too high, a backup
//! that copies keys beside ciphertext, or an `rm` that takes both: `serve`
//! and `reap` refuse such a layout and say what is in the way.

use std::path::{Path, PathBuf};

use mediavault::config::Config;
use mediavault_storage::{BlobConfig, DatabaseUrl};

use crate::embedded;

/// Fails, naming the file, when the local blob directory of `blobs` holds
/// the SQLite database, the development key or token, or a configured
/// secret file.
pub fn check_apart(config: &Config, blobs: &BlobConfig) -> anyhow::Result<()> {
    let Some(blob_dir) = blobs.local_dir() else {
        return Ok(());
    };
    let blob_dir = resolved(&blob_dir);
    let database_url = config.database_url()?;
    let mut guarded: Vec<(&str, PathBuf)> = Vec::new();
    if let DatabaseUrl::Sqlite(url) = &database_url {
        guarded.extend(embedded::database_file(url).map(|file| ("the database", file)));
        guarded.extend(embedded::dev_files(url));
    }
    let secret_files = [
        ("database.url_file", config.database.url_file.as_ref()),
        ("crypto.keys_file", config.crypto.keys_file.as_ref()),
        (
            "crypto.pkcs11.pin_file",
            config
                .crypto
                .pkcs11
                .as_ref()
                .and_then(|pkcs11| pkcs11.pin_file.as_ref()),
        ),
        ("links.keys_file", config.links.keys_file.as_ref()),
        ("admin.token_file", config.admin.token_file.as_ref()),
        (
            "blobs.secret_access_key_file",
            config.blobs.secret_access_key_file.as_ref(),
        ),
    ];
    guarded.extend(
        secret_files
            .into_iter()
            .filter_map(|(key, path)| path.map(|path| (key, path.clone()))),
    );
    for (what, path) in guarded {
        if resolved(&path).starts_with(&blob_dir) {
            anyhow::bail!(
                "blobs.url {:?} is a directory that holds {what} ({}): give the blobs a directory \
                 of their own, such as data/blobs",
                config.blobs.url,
                path.display()
            );
        }
    }
    Ok(())
}

/// `path` made absolute, with symbolic links resolved as far as it exists
/// (a file not created yet is placed in its resolved directory).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolved(parent).join(name),
        (_, Some(name)) => resolved(Path::new(".")).join(name),
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_not_yet_created_resolves_inside_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(resolved(&dir.path().join("a/b/c")), real.join("a/b/c"));
    }
}
