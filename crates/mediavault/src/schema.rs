//! Which commands may change the database schema: only `migrate` and
//! `serve` (unless `database.migrate_on_start` is off). Every other command
//! runs against the schema it finds, and only if that is the schema it was
//! built for: an operator's newer CLI must not migrate production ahead of
//! the replicas serving it, nor an older one write to a schema it does not
//! know.

use anyhow::bail;
use mediavault_storage::{SchemaVersions, Vault};

/// What a command accepts of a schema it did not migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Exactly the versions this binary knows.
    Exact,
    /// At least them: `serve` during a rolling deploy, next to newer replicas
    /// that have migrated further.
    AtLeast,
}

/// Fails, naming the database's version and this binary's, unless the
/// database's schema is one `accept` allows.
pub async fn check(vault: &Vault, accept: Accept) -> anyhow::Result<()> {
    let versions = vault.schema_versions().await?;
    if let Some(problem) = mismatch(&versions, accept) {
        bail!("{problem}");
    }
    Ok(())
}

fn mismatch(versions: &SchemaVersions, accept: Accept) -> Option<String> {
    let known = versions
        .latest_known()
        .map_or_else(|| "none".to_owned(), |v| v.to_string());
    let applied = versions
        .latest_applied()
        .map_or_else(|| "none (never migrated)".to_owned(), |v| v.to_string());
    if !versions.missing().is_empty() {
        return Some(format!(
            "the database schema is at version {applied}, older than version {known} that this \
             mediavault needs; run `mediavault migrate` with this version first"
        ));
    }
    if accept == Accept::Exact && !versions.unknown().is_empty() {
        return Some(format!(
            "the database schema is at version {applied}, newer than version {known} that this \
             mediavault knows; use the mediavault version that migrated it"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(known: &[i64], applied: &[i64]) -> SchemaVersions {
        SchemaVersions {
            known: known.to_vec(),
            applied: applied.to_vec(),
        }
    }

    #[test]
    fn only_the_known_schema_passes_and_refusals_name_both_versions() {
        assert_eq!(mismatch(&versions(&[1, 2], &[1, 2]), Accept::Exact), None);
        let older = mismatch(&versions(&[1, 2], &[1]), Accept::AtLeast).unwrap();
        assert!(older.contains("version 1, older than version 2"), "{older}");
        let never = mismatch(&versions(&[1, 2], &[]), Accept::Exact).unwrap();
        assert!(
            never.contains("none (never migrated)") && never.contains("version 2"),
            "{never}"
        );
        let newer = mismatch(&versions(&[1, 2], &[1, 2, 3]), Accept::Exact).unwrap();
        assert!(newer.contains("version 3, newer than version 2"), "{newer}");
        assert_eq!(mismatch(&versions(&[1, 2], &[1, 2, 3]), Accept::AtLeast), None);
    }
}
