//! Durations as users write them in manifests: Go's `time.ParseDuration` grammar restricted to
//! the units that make sense for rollouts and budgets (`ms`, `s`, `m`, `h`), e.g. `90s`, `5m`,
//! `1h30m`. The CEL rule and [`parse`] accept exactly the same strings.

use std::time::Duration;

/// RE2 pattern used by the CRD schema (CEL `matches`) for every duration field.
pub const PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// CEL rule attached to every duration field.
pub const CEL_RULE: &str = r"self.matches('^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$')";

/// Message the API server returns when a duration does not parse.
pub const CEL_MESSAGE: &str = "must be a duration such as 500ms, 30s, 5m or 1h30m";

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("{0:?}: {CEL_MESSAGE}")]
    Invalid(String),
    #[error("{0:?}: duration is too large")]
    Overflow(String),
}

/// Parses a manifest duration (`1h30m`, `250ms`, `1.5s`).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(text.to_string());
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(invalid());
        }
        if number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let (unit_seconds, unit_len) = if tail.starts_with("ms") {
            (0.001, 2)
        } else if tail.starts_with('s') {
            (1.0, 1)
        } else if tail.starts_with('m') {
            (60.0, 1)
        } else if tail.starts_with('h') {
            (3600.0, 1)
        } else {
            return Err(invalid());
        };
        total += value * unit_seconds;
        rest = &tail[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| DurationError::Overflow(text.to_string()))
}

/// Formats a duration the way [`parse`] reads it back (whole seconds and milliseconds).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let (hours, rem) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rem) = (rem / 60_000, rem % 60_000);
    let (seconds, ms) = (rem / 1000, rem % 1000);
    let mut out = String::new();
    for (value, unit) in [(hours, "h"), (minutes, "m"), (seconds, "s"), (ms, "ms")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_users_write() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn parser_and_schema_pattern_agree() {
        // `regex` and RE2 (the API server's CEL engine) agree on this pattern's syntax.
        let schema = regex::Regex::new(PATTERN).unwrap();
        for bad in [
            "", "5", "m", "5 m", "5min", "-5s", "1.s", ".5s", "1..5s", "5d", "1h30",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
            assert!(
                !schema.is_match(bad),
                "{bad:?} should not match the schema pattern"
            );
        }
        for good in ["90s", "1h30m", "250ms", "1.5s", "0s"] {
            assert!(parse(good).is_ok(), "{good:?} should parse");
            assert!(
                schema.is_match(good),
                "{good:?} should match the schema pattern"
            );
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["1h30m", "250ms", "5m", "1h1m1s1ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn the_cel_rule_embeds_the_pattern() {
        assert_eq!(
            CEL_RULE.replace(r"\\", r"\"),
            format!("self.matches('{PATTERN}')")
        );
    }
}
