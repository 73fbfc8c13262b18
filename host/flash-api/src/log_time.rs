//! The timestamp of a worker's JSON log line, as `flash-host` writes it and `flash server`
//! filters it (`flash logs --since`): RFC 3339 in UTC with microseconds and a fixed width,
//! so that timestamps sort as text.

use time::OffsetDateTime;

/// `2026-12-04T14:30:00.123456Z`.
pub fn format(time: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// Unix milliseconds in the same format.
pub fn of_unix_ms(ms: i64) -> String {
    format(
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_width_utc_with_microseconds() {
        assert_eq!(
            super::of_unix_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123000Z"
        );
        assert_eq!(super::of_unix_ms(0), "1970-01-01T00:00:00.000000Z");
    }
}
