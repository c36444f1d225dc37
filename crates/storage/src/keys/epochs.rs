//! The calendar of epoch keys. With epoch keys, each file's data key is
//! wrapped under the KEK of its expiry epoch, the UTC day on which its
//! retention ends, and that KEK is destroyed in the provider once the day
//! and a grace period have passed and no live media need it: from then on
//! no database backup, however old, unwraps the data key of any file of
//! that epoch. This module says which epoch an expiry falls in, how its KEK
//! is labelled, and from when that KEK may be destroyed.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use crate::model::{Millis, duration_millis};

/// The label of every epoch KEK starts so; no other key may.
pub const EPOCH_LABEL_PREFIX: &str = "epoch-";

/// A UTC day: the epoch of every file whose retention ends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(NaiveDate);

impl Epoch {
    /// The epoch of a file that expires at `expires_at`.
    pub fn of(expires_at: Millis) -> Epoch {
        Epoch(DateTime::<Utc>::from_timestamp_millis(expires_at).map_or(NaiveDate::MAX, |at| at.date_naive()))
    }

    /// The label of its KEK: `epoch-YYYYMMDD`.
    pub fn label(&self) -> String {
        format!("{EPOCH_LABEL_PREFIX}{}", self.0.format("%Y%m%d"))
    }

    /// The epoch a KEK's label names, if it names one.
    pub fn from_label(label: &str) -> Option<Epoch> {
        let digits = label.strip_prefix(EPOCH_LABEL_PREFIX)?;
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
        assert_eq!(epoch.label(), "epoch-20261230");
        assert_eq!(Epoch::of(at("2026-12-30T23:59:59.999Z")), epoch);
        assert_eq!(
            Epoch::of(at("2026-12-31T01:00:00+02:00")),
            epoch,
            "UTC, not local time"
        );
        assert_eq!(Epoch::of(at("2026-12-31T00:00:00Z")).label(), "epoch-20261231");
        assert_eq!(Epoch::of(at("1969-12-31T12:00:00Z")).label(), "epoch-19691231");
    }

    #[test]
    fn labels_name_their_epoch_and_nothing_else() {
        let epoch = Epoch::of(at("2027-02-28T08:00:00Z"));
        assert_eq!(Epoch::from_label(&epoch.label()), Some(epoch));
        for other in [
            "hsm-1",
            "epoch-",
            "epoch-2027022",
            "epoch-202702289",
            "epoch-20270230",
            "epoch-2027-02",
        ] {
            assert_eq!(Epoch::from_label(other), None, "{other}");
        }
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
