//! The embedded default: with a SQLite database and no configured keys, a
//! development key, app and token are made on first start and reused after,
//! kept beside the database with mode 0600. A development key is never made
//! again once the database needs one: a lost key file stops the start. A
//! development key for signed links is kept the same way; losing it costs
//! only the links it signed, so a new one is simply made.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use mediavault_api::LinkKeys;
use mediavault_storage::{App, Keyring, NewApp, Vault};

const DEV_KEY_FILE: &str = "dev.key";
const DEV_KEY_ID: &str = "dev";
const DEV_TOKEN_FILE: &str = "dev-token";
const DEV_LINK_KEY_FILE: &str = "dev-links.key";

/// The SQLite database file, or `None` for an in-memory database.
pub fn database_file(database_url: &str) -> Option<PathBuf> {
    let path = database_url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The directory that holds the SQLite database (and the development secrets).
pub fn data_dir(database_url: &str) -> PathBuf {
    match database_file(database_url).as_deref().and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The development key and token files of an embedded database, named for
/// messages.
pub fn dev_files(database_url: &str) -> [(&'static str, PathBuf); 3] {
    let dir = data_dir(database_url);
    [
        ("the development key", dir.join(DEV_KEY_FILE)),
        ("the development token", dir.join(DEV_TOKEN_FILE)),
        ("the development links key", dir.join(DEV_LINK_KEY_FILE)),
    ]
}

/// A development key made because none was found: saved only once the
/// database shows it needs no earlier one.
pub struct NewDevKey {
    path: PathBuf,
    line: String,
    /// The SQLite database's URL, named when the key cannot be saved.
    database_url: String,
}

/// Reads the development key; makes one if there is none, to be saved with
/// `NewDevKey::save` once the database is open.
pub fn dev_keyring(database_url: &str) -> anyhow::Result<(Keyring, Option<NewDevKey>)> {
    let path = data_dir(database_url).join(DEV_KEY_FILE);
    let (line, new) = match std::fs::read_to_string(&path) {
        Ok(line) => (line, None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let line = Keyring::generate_line(DEV_KEY_ID);
            (
                line.clone(),
                Some(NewDevKey {
                    path: path.clone(),
                    line,
                    database_url: database_url.to_owned(),
                }),
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let keys = Keyring::parse(line.trim()).with_context(|| format!("development key {}", path.display()))?;
    Ok((keys, new))
}

impl NewDevKey {
    /// Saves the new key, unless the database still needs the key it would
    /// replace (media wrapped by it, or its recorded fingerprint): then the
    /// key file was lost, and a new key under the same id would read none of
    /// them, so the start stops instead.
    pub async fn save(self, vault: &Vault) -> anyhow::Result<()> {
        if vault.key_needed(DEV_KEY_ID).await? {
            bail!(
                "{} is missing, but the database {} holds media (or the record) of the development \
                 key {DEV_KEY_ID:?} it held; restore the file from a backup: a new key would read \
                 none of them, so none is made (to start afresh instead, move the database away)",
                self.path.display(),
                self.database_url
                    .trim_start_matches("sqlite:")
                    .trim_start_matches("//")
            );
        }
        if !create_private(&self.path, &self.line)? {
            // Another process starting on the same directory made its own
            // key first, and may already be wrapping uploads under it: its
            // file stays, and this process, holding a key no file keeps,
            // must not wrap any.
            bail!(
                "another mediavault process made the development key {} at the same moment; start again to use it",
                self.path.display()
            );
        }
        tracing::warn!(path = %self.path.display(), "generated a development key; configure crypto.keys for production");
        Ok(())
    }
}

/// The development links key: read from beside the database, or made and
/// saved there (0600) if there is none.
pub fn dev_link_keys(database_url: &str) -> anyhow::Result<LinkKeys> {
    let path = data_dir(database_url).join(DEV_LINK_KEY_FILE);
    let line = match std::fs::read_to_string(&path) {
        Ok(line) => line,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let line = LinkKeys::generate_line(DEV_KEY_ID);
            if !create_private(&path, &line)? {
                // Made by another process at the same moment: its key is
                // the one links are signed with from now on.
                return dev_link_keys(database_url);
            }
            tracing::warn!(path = %path.display(), "generated a development links key; configure links.keys for production");
            line
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    LinkKeys::parse(line.trim()).with_context(|| format!("development links key {}", path.display()))
}

/// The development app, and where its token is kept.
pub struct DevApp {
    pub app: App,
    /// The token, only when it was issued by this start: it is shown once.
    pub new_token: Option<String>,
    pub token_file: PathBuf,
}

/// The development app and its token: reused if the saved token still
/// works, else created and saved.
pub async fn dev_app(vault: &Vault, database_url: &str) -> anyhow::Result<DevApp> {
    let path = data_dir(database_url).join(DEV_TOKEN_FILE);
    if let Ok(saved) = std::fs::read_to_string(&path)
        && let Some(app) = vault.app_for_token(saved.trim()).await?
    {
        return Ok(DevApp {
            app,
            new_token: None,
            token_file: path,
        });
    }
    let app = vault
        .create_app(NewApp {
            name: "dev".into(),
            capi: true,
            ..NewApp::default()
        })
        .await?;
    let issued = vault.issue_token(&app.id, Some("development")).await?;
    write_private(&path, &issued.token)?;
    Ok(DevApp {
        app,
        new_token: Some(issued.token),
        token_file: path,
    })
}

/// Writes a secret readable by its owner only (0600), replacing any old file.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    if !create_private(path, content)? {
        bail!("{} was made by another process meanwhile", path.display());
    }
    Ok(())
}

/// Makes a secret file readable by its owner only (0600), whole or not at
/// all, unless `path` exists already: then it is left as it is, and the
/// answer is false. A key file must never be replaced under a process that
/// read it, nor read half written.
fn create_private(path: &Path, content: &str) -> anyhow::Result<bool> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let staged = dir.join(format!(".{name}.{}.new", std::process::id()));
    let _ = std::fs::remove_file(&staged);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&staged)?;
        file.write_all(content.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        // A link, unlike a rename, fails where the name exists.
        std::fs::hard_link(&staged, path)
    })();
    let _ = std::fs::remove_file(&staged);
    match written {
        Ok(()) => {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn data_dir_is_the_database_directory() {
        assert_eq!(data_dir("sqlite://data/mediavault.db"), PathBuf::from("data"));
        assert_eq!(
            data_dir("sqlite:///var/lib/mv/db.sqlite?mode=rwc"),
            PathBuf::from("/var/lib/mv")
        );
        assert_eq!(data_dir("sqlite://db.sqlite"), PathBuf::from("."));
    }

    #[test]
    fn dev_link_key_is_private_and_stable() {
        use mediavault_api::{Disposition, LinkSigner};
        use mediavault_storage::{AppId, MediaId, TokenId};

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/mv.db", dir.path().display());
        let day = std::time::Duration::from_secs(86_400);
        let first = LinkSigner::new(dev_link_keys(&url).unwrap(), day);
        let file = dir.path().join(DEV_LINK_KEY_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let token = first.token(
            &AppId::new("a"),
            &MediaId::new("m"),
            &TokenId::new("0123456789abcdef"),
            2_000_000_000_000,
            Disposition::Inline,
        );
        let again = LinkSigner::new(dev_link_keys(&url).unwrap(), day);
        assert!(again.verify(&token, 0).is_ok(), "the saved key is read back");
    }

    /// Two processes starting at once on a new directory each make a key;
    /// the second to save it is refused, and the first's file stays, so the
    /// key the first wraps uploads under is the one read at the next start.
    #[tokio::test]
    async fn a_development_key_saved_twice_at_once_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/mv.db", dir.path().display());
        let (first, first_new) = dev_keyring(&url).unwrap();
        let (_, second_new) = dev_keyring(&url).unwrap();
        let vault = mediavault_storage::Vault::open(mediavault_storage::VaultConfig {
            database_url: format!("{url}?mode=rwc").parse().unwrap(),
            blobs: mediavault_storage::BlobConfig::local("memory://"),
            keys: Keyring::parse(&Keyring::generate_line("other")).unwrap(),
            defaults: mediavault_storage::Defaults::default(),
            stale_upload_after: std::time::Duration::from_secs(3600),
        })
        .await
        .unwrap();
        vault.migrate().await.unwrap();
        first_new.unwrap().save(&vault).await.unwrap();
        let refused = second_new.unwrap().save(&vault).await.unwrap_err();
        assert!(refused.to_string().contains("at the same moment"), "{refused}");
        let (kept, new) = dev_keyring(&url).unwrap();
        assert!(new.is_none());
        let dek = mediavault_storage::Dek::generate();
        let wrapped = first.wrap("m", 0, &dek).await.unwrap();
        assert_eq!(
            kept.unwrap("m", "dev", &wrapped.bytes).await.unwrap().as_bytes(),
            dek.as_bytes(),
            "the file holds the key the first process uses"
        );
        vault.close().await;
    }

    #[tokio::test]
    async fn dev_key_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/mv.db", dir.path().display());
        let (first, new) = dev_keyring(&url).unwrap();
        let new = new.expect("no key file yet: a new key");
        assert!(create_private(&new.path, &new.line).unwrap());
        let mode = std::fs::metadata(dir.path().join(DEV_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, new) = dev_keyring(&url).unwrap();
        assert!(new.is_none(), "the saved key is read back");
        let dek = mediavault_storage::Dek::generate();
        let wrapped = first.wrap("m", 0, &dek).await.unwrap();
        assert_eq!(
            again.unwrap("m", "dev", &wrapped.bytes).await.unwrap().as_bytes(),
            dek.as_bytes()
        );
    }
}
