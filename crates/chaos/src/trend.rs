//! Whether a series sampled through a long run holds steady: the mean of
//! its last third against the mean of its first third, with a tolerance
//! for noise. A leak, or a reaper that falls behind, shows as a later mean
//! above the earlier one by more than the tolerance.

/// How far a series may rise and still count as steady: a fraction of its
/// earlier mean, plus an absolute slack.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
}

impl Tolerance {
    /// The highest later mean still steady after an earlier mean of `earlier`.
    pub fn limit(&self, earlier: f64) -> f64 {
        earlier * (1.0 + self.relative) + self.absolute
    }
}

/// Fewest samples a verdict is given on (two per third at least).
pub const MIN_SAMPLES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The last third's mean is within the tolerance of the first third's.
    Steady { earlier: f64, later: f64 },
    /// The last third's mean is above what the tolerance allows.
    Rising { earlier: f64, later: f64 },
    /// Too few samples to say anything.
    TooFew(usize),
}

impl Verdict {
    pub fn is_rising(&self) -> bool {
        matches!(self, Verdict::Rising { .. })
    }
}

/// Judges `series` (in time order) against `tolerance`.
pub fn judge(series: &[f64], tolerance: Tolerance) -> Verdict {
    if series.len() < MIN_SAMPLES {
        return Verdict::TooFew(series.len());
    }
    let third = series.len() / 3;
    let mean = |part: &[f64]| part.iter().sum::<f64>() / part.len() as f64;
    let earlier = mean(&series[..third]);
    let later = mean(&series[series.len() - third..]);
    if later <= tolerance.limit(earlier) {
        Verdict::Steady { earlier, later }
    } else {
        Verdict::Rising { earlier, later }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PERCENT: Tolerance = Tolerance {
        relative: 0.10,
        absolute: 2.0,
    };

    #[test]
    fn a_rising_series_is_rising() {
        // A leak of one unit a sample: 100 -> 129.
        let leak: Vec<f64> = (0..30).map(|i| 100.0 + f64::from(i)).collect();
        let verdict = judge(&leak, TEN_PERCENT);
        assert!(verdict.is_rising(), "{verdict:?}");
        assert_eq!(
            verdict,
            Verdict::Rising {
                earlier: 104.5,
                later: 124.5
            }
        );
    }

    #[test]
    fn a_flat_noisy_series_is_steady() {
        let flat: Vec<f64> = (0..30).map(|i| 100.0 + [0.0, 6.0, -4.0][i % 3]).collect();
        assert!(matches!(judge(&flat, TEN_PERCENT), Verdict::Steady { .. }));
        // A series that falls is steady too.
        let falling: Vec<f64> = (0..30).map(|i| 200.0 - f64::from(i)).collect();
        assert!(matches!(judge(&falling, TEN_PERCENT), Verdict::Steady { .. }));
    }

    #[test]
    fn short_series_are_not_judged() {
        assert_eq!(judge(&[1.0, 50.0, 99.0], TEN_PERCENT), Verdict::TooFew(3));
    }
}
