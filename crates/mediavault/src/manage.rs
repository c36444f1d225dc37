//! The operator's commands against the database: `apps …`, `tokens …` and
//! `keys rewrap|usage`. Each prints JSON on stdout: for `apps` and `tokens`,
//! what the admin API's reply carries (the app, the token, the stats, or the
//! reply's own fields) without its `"status": "success"`.

use anyhow::bail;
use mediavault_api::{AppDeletedBody, AppView, IssuedTokenView, StatsView, TOKEN_REVOKED, TokenView};
use mediavault_storage::{App, AppUpdate, NewApp, Vault};
use serde_json::{Value, json};

use crate::cli::{AppsCommand, StoredKeysCommand, TokensCommand};

fn print(value: impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(&value)?);
    Ok(())
}

/// An optional setting as `update` takes it: a new value, `Some(None)` to
/// take the configured default again, `None` to leave it.
fn or_default<T>(value: Option<T>, restore_default: bool) -> Option<Option<T>> {
    if restore_default {
        Some(None)
    } else {
        value.map(Some)
    }
}

/// A list given by repeating a flag: `None` (left as it is) when the flag
/// was not given.
fn given<T>(list: Vec<T>) -> Option<Vec<T>> {
    (!list.is_empty()).then_some(list)
}

/// An app as printed, with its phone-number ids.
async fn view(vault: &Vault, app: &App) -> anyhow::Result<AppView> {
    Ok(AppView::new(app, vault.phone_number_ids(&app.id).await?))
}

pub async fn apps(vault: &Vault, command: AppsCommand) -> anyhow::Result<()> {
    match command {
        AppsCommand::Create(create) => {
            let app = vault
                .create_app(NewApp {
                    name: create.name,
                    capi: create.capi,
                    retention: create.retention,
                    max_file_bytes: create.max_file_bytes,
                    allowed_types: create.allowed_types,
                    uploads_per_second: create.uploads_per_second,
                    max_bytes_stored: create.max_bytes_stored,
                    max_media: create.max_media,
                    wa_phone_number_ids: create.wa_phone_number_ids,
                    wa_type_limits: given(create.wa_type_limits),
                })
                .await?;
            print(view(vault, &app).await?)
        }
        AppsCommand::List => {
            let apps = vault.list_apps().await?;
            print(AppView::all(&apps, vault.all_phone_number_ids().await?))
        }
        AppsCommand::Show { app_id } => {
            let app = vault.get_app(&app_id).await?;
            print(view(vault, &app).await?)
        }
        AppsCommand::Update(update) => {
            let app = vault
                .update_app(
                    &update.app_id,
                    AppUpdate {
                        name: update.name,
                        capi: update.capi,
                        retention: update.retention,
                        max_file_bytes: update.max_file_bytes,
                        allowed_types: if update.default_types {
                            Some(None)
                        } else {
                            update.allowed_types.map(Some)
                        },
                        uploads_per_second: or_default(update.uploads_per_second, update.default_upload_rate),
                        max_bytes_stored: or_default(
                            update.max_bytes_stored,
                            update.default_max_bytes_stored,
                        ),
                        max_media: or_default(update.max_media, update.default_max_media),
                        wa_phone_number_ids: if update.no_wa_phone_number_ids {
                            Some(Vec::new())
                        } else {
                            given(update.wa_phone_number_ids)
                        },
                        wa_type_limits: or_default(
                            given(update.wa_type_limits),
                            update.default_wa_type_limits,
                        ),
                    },
                )
                .await?;
            print(view(vault, &app).await?)
        }
        AppsCommand::Stats { app_id } => {
            let stats = vault.app_stats(&app_id).await?;
            print(StatsView::new(&app_id, stats))
        }
        AppsCommand::Recount => {
            let usage = vault.recount_usage().await?;
            print(
                usage
                    .iter()
                    .map(|(app_id, media, bytes)| json!({"appId": app_id, "mediaUsed": media, "bytesUsed": bytes}))
                    .collect::<Vec<_>>(),
            )
        }
        AppsCommand::Delete { app_id } => {
            let shredded = vault.delete_app(&app_id).await?;
            print(AppDeletedBody::new(shredded))
        }
    }
}

pub async fn tokens(vault: &Vault, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Issue { app_id, label } => {
            let issued = vault.issue_token(&app_id, label.as_deref()).await?;
            print(IssuedTokenView::from(&issued))
        }
        TokensCommand::List { app_id } => {
            let tokens = vault.list_tokens(&app_id).await?;
            print(tokens.iter().map(TokenView::from).collect::<Vec<_>>())
        }
        TokensCommand::Revoke { app_id, token_id } => {
            vault.revoke_token(&app_id, &token_id).await?;
            print(TOKEN_REVOKED)
        }
    }
}

/// How many live media each key wraps, as printed.
async fn key_usage(vault: &Vault) -> anyhow::Result<Value> {
    let usage = vault.key_use().await?;
    Ok(usage
        .iter()
        .map(|used| json!({ "keyId": used.kek_id, "media": used.media }))
        .collect())
}

pub async fn keys(vault: &Vault, command: StoredKeysCommand) -> anyhow::Result<()> {
    match command {
        StoredKeysCommand::Rewrap { batch } => {
            let counts = vault.rewrap(batch).await?;
            print(json!({
                "activeKey": vault.active_key_id(),
                "rewrapped": counts.rewrapped,
                "failed": counts.failed,
                "keys": key_usage(vault).await?,
            }))?;
            if counts.failed > 0 {
                bail!(
                    "{} data keys could not be unwrapped (see the log); configure their keys and run again",
                    counts.failed
                );
            }
            Ok(())
        }
        StoredKeysCommand::Usage => print(json!({
            "activeKey": vault.active_key_id(),
            "epochKeys": vault.epoch_settings().map(|epochs| json!({
                "labelPrefix": epochs.label_prefix,
                "grace": humantime::format_duration(epochs.grace).to_string(),
                "aheadDays": epochs.ahead_days,
            })),
            "keys": key_usage(vault).await?,
        })),
    }
}
