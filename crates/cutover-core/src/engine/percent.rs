//! Exact percentages and thresholds.
//!
//! A [`Percent`] is stored in hundredths of a percent (basis points), so that
//! `12.5 %` is the integer `1250` and every comparison the engine makes is an
//! integer cross-multiplication: `failed * 10_000 > limit * finished`. No float
//! ever decides whether a wave aborts, so `1 of 10` is exactly `10 %`, never
//! `10.000000001 %`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Hundredths of a percent in one percent.
const SCALE: u64 = 100;
/// Hundredths of a percent in the whole (100 %).
pub const WHOLE: u64 = 100 * SCALE;

/// A percentage between 0 and 100 with at most two decimals, kept exact.
///
/// Written as a number (`10`, `12.5`) or a string (`"12.5"`, `"12.5%"`) in
/// configuration and JSON; serialized back as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawNumber", into = "PercentOut")]
pub struct Percent {
    basis_points: u32,
}

/// Why a text or number is not a valid percentage or threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    #[error("percentage {0} is not between 0 and 100")]
    OutOfRange(String),
    #[error("percentage {0} has more than two decimals")]
    TooPrecise(String),
    #[error("{0:?} is neither a count (like 5) nor a percentage (like \"10%\")")]
    Unreadable(String),
}

impl Percent {
    /// 100 %.
    pub const HUNDRED: Percent = Percent {
        basis_points: WHOLE as u32,
    };
    /// 0 %.
    pub const ZERO: Percent = Percent { basis_points: 0 };

    /// A whole percentage, `0..=100`.
    pub fn whole(percent: u32) -> Result<Self, PercentError> {
        Self::from_basis_points(percent.saturating_mul(SCALE as u32))
            .map_err(|_| PercentError::OutOfRange(percent.to_string()))
    }

    /// Hundredths of a percent, `0..=10_000` (so `1250` is 12.5 %).
    pub fn from_basis_points(basis_points: u32) -> Result<Self, PercentError> {
        if u64::from(basis_points) > WHOLE {
            return Err(PercentError::OutOfRange(format_basis_points(u64::from(
                basis_points,
            ))));
        }
        Ok(Self { basis_points })
    }

    /// The value in hundredths of a percent.
    pub fn basis_points(self) -> u32 {
        self.basis_points
    }

    /// `ceil(self × n)`: how many of `n` items this percentage covers, rounded
    /// up so that a non-zero percentage of a non-empty set is never nobody.
    pub fn of_ceil(self, n: u32) -> u32 {
        let product = u64::from(self.basis_points) * u64::from(n);
        product.div_ceil(WHOLE) as u32
    }

    /// Whether `part / whole > self`, exactly. `whole == 0` is never above.
    pub fn exceeded_by(self, part: u64, whole: u64) -> bool {
        whole > 0
            && u128::from(part) * u128::from(WHOLE)
                > u128::from(self.basis_points) * u128::from(whole)
    }

    /// Whether `part / whole >= self`, exactly. An empty whole meets any
    /// percentage (there was nothing to fail).
    pub fn met_by(self, part: u64, whole: u64) -> bool {
        u128::from(part) * u128::from(WHOLE) >= u128::from(self.basis_points) * u128::from(whole)
    }

    fn parse_text(text: &str) -> Result<Self, PercentError> {
        let trimmed = text.trim().trim_end_matches('%').trim();
        let (int_part, frac_part) = match trimmed.split_once('.') {
            Some((i, f)) => (i, f),
            None => (trimmed, ""),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int_part) || !(frac_part.is_empty() || digits(frac_part)) {
            return Err(PercentError::Unreadable(text.to_string()));
        }
        let frac_trimmed = frac_part.trim_end_matches('0');
        if frac_trimmed.len() > 2 {
            return Err(PercentError::TooPrecise(text.to_string()));
        }
        let whole: u64 = int_part
            .parse()
            .map_err(|_| PercentError::OutOfRange(text.to_string()))?;
        let mut frac: u64 = if frac_trimmed.is_empty() {
            0
        } else {
            frac_trimmed.parse().unwrap_or(0)
        };
        if frac_trimmed.len() == 1 {
            frac *= 10;
        }
        let bp = whole.checked_mul(SCALE).and_then(|w| w.checked_add(frac));
        match bp {
            Some(bp) if bp <= WHOLE => Ok(Self {
                basis_points: bp as u32,
            }),
            _ => Err(PercentError::OutOfRange(text.to_string())),
        }
    }

    fn from_f64(value: f64) -> Result<Self, PercentError> {
        if !value.is_finite() || !(0.0..=100.0).contains(&value) {
            return Err(PercentError::OutOfRange(value.to_string()));
        }
        let scaled = value * SCALE as f64;
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 {
            return Err(PercentError::TooPrecise(value.to_string()));
        }
        Ok(Self {
            basis_points: rounded as u32,
        })
    }
}

impl std::str::FromStr for Percent {
    type Err = PercentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_text(s)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} %", format_basis_points(u64::from(self.basis_points)))
    }
}

impl From<Percent> for f64 {
    fn from(p: Percent) -> f64 {
        f64::from(p.basis_points) / SCALE as f64
    }
}

/// A whole percentage is written as an integer, any other as a decimal.
#[derive(Serialize)]
#[serde(untagged)]
enum PercentOut {
    Whole(u32),
    Decimal(f64),
}

impl From<Percent> for PercentOut {
    fn from(p: Percent) -> Self {
        if u64::from(p.basis_points) % SCALE == 0 {
            PercentOut::Whole(p.basis_points / SCALE as u32)
        } else {
            PercentOut::Decimal(p.into())
        }
    }
}

/// What serde hands us for a number-like field before we check it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawNumber {
    Int(u64),
    Float(f64),
    Text(String),
}

impl TryFrom<RawNumber> for Percent {
    type Error = PercentError;
    fn try_from(raw: RawNumber) -> Result<Self, Self::Error> {
        match raw {
            RawNumber::Int(i) => u32::try_from(i)
                .map_err(|_| PercentError::OutOfRange(i.to_string()))
                .and_then(Percent::whole),
            RawNumber::Float(x) => Percent::from_f64(x),
            RawNumber::Text(t) => Percent::parse_text(&t),
        }
    }
}

/// A count of targets or a percentage of a set: a batch size, a success or an
/// error threshold.
///
/// Written as an integer (`5`, a count) or a string ending in `%` (`"10%"`,
/// `"12.5%"`, a percentage); a string without `%` is a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawNumber", into = "ThresholdOut")]
pub enum Threshold {
    Count(u32),
    Percent(Percent),
}

impl Threshold {
    /// `percent` whole percent.
    pub fn percent(percent: u32) -> Self {
        Threshold::Percent(Percent::whole(percent.min(100)).unwrap_or(Percent::HUNDRED))
    }

    /// How many of `size` items this covers: a count is capped at `size`, a
    /// percentage is rounded up.
    pub fn of_ceil(self, size: u32) -> u32 {
        match self {
            Threshold::Count(c) => c.min(size),
            Threshold::Percent(p) => p.of_ceil(size),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Count(c) => write!(f, "{c}"),
            Threshold::Percent(p) => write!(f, "{p}"),
        }
    }
}

impl TryFrom<RawNumber> for Threshold {
    type Error = PercentError;
    fn try_from(raw: RawNumber) -> Result<Self, Self::Error> {
        match raw {
            RawNumber::Int(i) => u32::try_from(i)
                .map(Threshold::Count)
                .map_err(|_| PercentError::Unreadable(i.to_string())),
            RawNumber::Float(x) => Err(PercentError::Unreadable(x.to_string())),
            RawNumber::Text(t) => {
                if t.trim().ends_with('%') {
                    Percent::parse_text(&t).map(Threshold::Percent)
                } else {
                    t.trim()
                        .parse::<u32>()
                        .map(Threshold::Count)
                        .map_err(|_| PercentError::Unreadable(t.clone()))
                }
            }
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum ThresholdOut {
    Count(u32),
    Percent(String),
}

impl From<Threshold> for ThresholdOut {
    fn from(t: Threshold) -> Self {
        match t {
            Threshold::Count(c) => ThresholdOut::Count(c),
            Threshold::Percent(p) => ThresholdOut::Percent(format!(
                "{}%",
                format_basis_points(u64::from(p.basis_points))
            )),
        }
    }
}

/// Formats hundredths of a percent without trailing zeros: `1250` → `12.5`.
fn format_basis_points(bp: u64) -> String {
    let whole = bp / SCALE;
    let frac = bp % SCALE;
    if frac == 0 {
        whole.to_string()
    } else if frac.is_multiple_of(10) {
        format!("{whole}.{}", frac / 10)
    } else {
        format!("{whole}.{frac:02}")
    }
}

/// Which way to round a measured rate for a message, so that the printed
/// figure never contradicts the exact comparison that was made.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Round {
    /// For "above a limit": round up.
    Up,
    /// For "below a limit": round down.
    Down,
}

/// `part / whole` as a percentage with at most two decimals, for messages.
pub(crate) fn format_rate(part: u64, whole: u64, round: Round) -> String {
    if whole == 0 {
        return "0 %".to_string();
    }
    let num = u128::from(part) * u128::from(WHOLE);
    let den = u128::from(whole);
    let bp = match round {
        Round::Up => num.div_ceil(den),
        Round::Down => num / den,
    };
    format!("{} %", format_basis_points(bp as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_strings_exactly() {
        let p: Percent = serde_json::from_str("12.5").unwrap();
        assert_eq!(p.basis_points(), 1250);
        let p: Percent = serde_json::from_str("10").unwrap();
        assert_eq!(p.basis_points(), 1000);
        let p: Percent = serde_json::from_str("\"0.01%\"").unwrap();
        assert_eq!(p.basis_points(), 1);
        assert!(serde_json::from_str::<Percent>("12.345").is_err());
        assert!(serde_json::from_str::<Percent>("101").is_err());
        assert!(serde_json::from_str::<Percent>("\"ten\"").is_err());
        assert_eq!(
            serde_json::to_string(&Percent::whole(25).unwrap()).unwrap(),
            "25"
        );
        let p: Percent = serde_json::from_str("12.5").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "12.5");
    }

    #[test]
    fn thresholds_are_counts_or_percentages() {
        let t: Threshold = serde_json::from_str("5").unwrap();
        assert_eq!(t, Threshold::Count(5));
        let t: Threshold = serde_json::from_str("\"12.5%\"").unwrap();
        assert_eq!(
            t,
            Threshold::Percent(Percent::from_basis_points(1250).unwrap())
        );
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"12.5%\"");
        assert_eq!(serde_json::to_string(&Threshold::Count(3)).unwrap(), "3");
        assert!(serde_json::from_str::<Threshold>("\"many\"").is_err());
    }

    #[test]
    fn comparisons_are_exact_at_the_boundary() {
        let ten = Percent::whole(10).unwrap();
        // 1 of 10 is exactly 10 %: not above, but it meets 10 %.
        assert!(!ten.exceeded_by(1, 10));
        assert!(ten.met_by(1, 10));
        // 100_001 of 1_000_000 is 10.0001 %: above.
        assert!(ten.exceeded_by(100_001, 1_000_000));
        let third = Percent::from_basis_points(3333).unwrap();
        assert!(third.exceeded_by(1, 3));
        assert_eq!(Percent::whole(1).unwrap().of_ceil(1_000_000), 10_000);
        assert_eq!(Percent::whole(1).unwrap().of_ceil(7), 1);
        assert_eq!(Percent::ZERO.of_ceil(7), 0);
    }

    #[test]
    fn rates_print_on_the_side_of_the_comparison() {
        assert_eq!(format_rate(5, 40, Round::Up), "12.5 %");
        assert_eq!(format_rate(1, 3, Round::Up), "33.34 %");
        assert_eq!(format_rate(1, 3, Round::Down), "33.33 %");
        assert_eq!(format_rate(0, 0, Round::Down), "0 %");
    }
}
