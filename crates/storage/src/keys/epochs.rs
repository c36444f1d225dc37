//! The calendar of epoch keys. With epoch keys, each file's data key is
//! wrapped under the KEK of its expiry epoch, the UTC day on which its
//! retention ends, and that KEK is destroyed in the provider once the day
//! and a grace period have passed and no live media need it: from then on
//! no database backup, however old, unwraps the data key of any file of
//! that epoch. This module says which epoch an expiry falls in, how its KEK
//! is labelled, and from when that KEK may be destroyed.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::{KeyError, check_id};
use crate::model::{Millis, duration_millis};

/// What epoch labels start with unless `crypto.epochs.label_prefix` says
/// otherwise.
pub const EPOCH_LABEL_PREFIX: &str = "epoch-";

/// `[crypto.epochs]`: epoch keys are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochSettings {
    /// What every epoch KEK's label starts with; the date follows.
    pub label_prefix: String,
    /// How long after its day has ended an epoch's KEK is kept: for
    /// downloads under way at expiry and for clocks that differ.
    pub grace: Duration,
    /// The KEKs of the epochs from today through this many days ahead are
    /// made before any upload needs them.
    pub ahead_days: u32,
}

impl EpochSettings {
    /// One day of grace, 32 days ahead (the default retention, 30 days, and
    /// a margin), labels `epoch-YYYYMMDD`.
    pub fn new(label_prefix: &str) -> EpochSettings {
        EpochSettings {
            label_prefix: label_prefix.to_owned(),
            grace: Duration::from_secs(24 * 3600),
            ahead_days: 32,
        }
    }

    /// Refuses a prefix that would not make labels of key ids' form.
    pub fn check(&self) -> Result<(), KeyError> {
        if self.label_prefix.is_empty() {
            // Any label of eight digits would be taken for an epoch's, and destroyed.
            return Err(KeyError::Provider(
                "crypto.epochs.label_prefix is empty: give epoch keys' labels a prefix of their own".into(),
            ));
        }
        let sample = self.label(Epoch::of(0));
        check_id(&sample).map_err(|_| {
            KeyError::Provider(format!(
                "crypto.epochs.label_prefix {:?}: labels such as {sample:?} may only use letters, \
                 digits, '-', '_' and '.' (at most 64)",
                self.label_prefix
            ))
        })
    }

    /// The label of `epoch`'s KEK.
    pub fn label(&self, epoch: Epoch) -> String {
        epoch.label(&self.label_prefix)
    }

    /// The epoch a KEK's label names, if it is an epoch label of these settings.
    pub fn epoch_of(&self, label: &str) -> Option<Epoch> {
        Epoch::from_label(&self.label_prefix, label)
    }

    /// The epochs whose KEKs are made ahead at `now`: today's and the next
    /// `ahead_days`.
    pub fn ahead(&self, now: Millis) -> impl Iterator<Item = Epoch> {
        let today = Epoch::of(now);
        (0..=self.ahead_days)
            .filter_map(move |days| today.0.checked_add_days(Days::new(days.into())).map(Epoch))
    }
}

/// A UTC day: the epoch of every file whose retention ends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(NaiveDate);

impl Epoch {
    /// The epoch of a file that expires at `expires_at`.
    pub fn of(expires_at: Millis) -> Epoch {
        Epoch(DateTime::<Utc>::from_timestamp_millis(expires_at).map_or(NaiveDate::MAX, |at| at.date_naive()))
    }

    /// The label of its KEK: `prefix` and `YYYYMMDD`.
    pub fn label(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.0.format("%Y%m%d"))
    }

    /// The epoch a KEK's label names, if it is `prefix` and a date.
    pub fn from_label(prefix: &str, label: &str) -> Option<Epoch> {
        let digits = label.strip_prefix(prefix)?;
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        NaiveDate::parse_from_str(digits, "%Y%m%d").ok().map(Epoch)
    }

    /// The end of the day: every file of this epoch has expired by then.
    pub fn ends_at(&self) -> Millis {
        self.0
            .succ_opt()
            .and_then(|next| next.and_hms_opt(0, 0, 0))
            .map_or(Millis::MAX, |midnight| midnight.and_utc().timestamp_millis())
    }

    /// Whether its KEK may be destroyed at `now`: the day has ended and
    /// `grace` has passed since. (Live media that still need it, if any,
    /// keep it regardless.)
    pub fn is_over(&self, now: Millis, grace: Duration) -> bool {
        now >= self.ends_at().saturating_add(duration_millis(grace))
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    #[test]
    fn an_expiry_falls_in_its_utc_day() {
        let epoch = Epoch::of(at("2026-12-30T00:00:00Z"));
        assert_eq!(epoch.label("epoch-"), "epoch-20261230");
        assert_eq!(Epoch::of(at("2026-12-30T23:59:59.999Z")), epoch);
        assert_eq!(
            Epoch::of(at("2026-12-31T01:00:00+02:00")),
            epoch,
            "UTC, not local time"
        );
        assert_eq!(
            Epoch::of(at("2026-12-31T00:00:00Z")).label("epoch-"),
            "epoch-20261231"
        );
        assert_eq!(Epoch::of(at("1969-12-31T12:00:00Z")).label("e."), "e.19691231");
    }

    #[test]
    fn labels_name_their_epoch_and_nothing_else() {
        let epoch = Epoch::of(at("2027-02-28T08:00:00Z"));
        let settings = EpochSettings::new("epoch-");
        assert_eq!(settings.epoch_of(&settings.label(epoch)), Some(epoch));
        assert_eq!(Epoch::from_label("prod-", "prod-20270228"), Some(epoch));
        assert_eq!(
            Epoch::from_label("prod-", "epoch-20270228"),
            None,
            "another prefix"
        );
        for other in [
            "hsm-1",
            "epoch-",
            "epoch-2027022",
            "epoch-202702289",
            "epoch-20270230",
            "epoch-2027-02",
        ] {
            assert_eq!(settings.epoch_of(other), None, "{other}");
        }
    }

    #[test]
    fn keys_are_made_from_today_through_the_days_ahead() {
        let settings = EpochSettings {
            ahead_days: 2,
            ..EpochSettings::new("x-")
        };
        let labels: Vec<String> = settings
            .ahead(at("2026-12-31T23:00:00Z"))
            .map(|epoch| settings.label(epoch))
            .collect();
        assert_eq!(labels, ["x-20261231", "x-20270101", "x-20270102"]);
    }

    #[test]
    fn a_key_may_go_once_its_day_and_the_grace_have_passed() {
        let epoch = Epoch::of(at("2026-12-30T10:00:00Z"));
        assert_eq!(epoch.ends_at(), at("2026-12-31T00:00:00Z"));
        let grace = Duration::from_secs(24 * 3600);
        assert!(!epoch.is_over(at("2026-12-30T23:59:59Z"), Duration::ZERO));
        assert!(epoch.is_over(at("2026-12-31T00:00:00Z"), Duration::ZERO));
        assert!(!epoch.is_over(at("2026-12-31T23:59:59Z"), grace));
        assert!(epoch.is_over(at("2027-01-01T00:00:00Z"), grace));
    }
}
