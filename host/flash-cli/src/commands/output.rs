//! Small formatting rules shared by `flash app` and `flash env`, as runpod-flash prints.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// `n word`, with runpod-flash's padding: `1 env ` lines up with `2 envs`.
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { " " } else { "s" })
}

/// The first 12 characters of an id, `-` when there is none.
pub fn short_id(id: Option<&str>) -> String {
    match id.filter(|i| !i.is_empty()) {
        Some(id) => id.chars().take(12).collect(),
        None => "-".to_string(),
    }
}

/// An RFC 3339 instant as runpod-flash shows it, `Thu, Feb 19 2026 9:33 PM UTC` (in UTC:
/// the local zone's name is not known without a time-zone database); `-` when absent; the
/// text itself when it does not parse.
pub fn datetime(value: Option<&str>) -> String {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return "-".to_string();
    };
    let Ok(at) = OffsetDateTime::parse(value, &Rfc3339) else {
        return value.to_string();
    };
    let at = at.to_offset(time::UtcOffset::UTC);
    let format = format_description!(
        "[weekday repr:short], [month repr:short] [day padding:none] [year] [hour repr:12 padding:none]:[minute] [period] UTC"
    );
    at.format(&format).unwrap_or_else(|_| value.to_string())
}

/// The width of the widest name, for a left-aligned column.
pub fn width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_runpod_flash() {
        assert_eq!(plural(1, "env"), "1 env ");
        assert_eq!(plural(0, "build"), "0 builds");
        assert_eq!(short_id(Some("build-0123456789abcdef")), "build-012345");
        assert_eq!(short_id(Some("b1")), "b1");
        assert_eq!(short_id(None), "-");
        assert_eq!(
            datetime(Some("2026-02-19T21:33:00Z")),
            "Thu, Feb 19 2026 9:33 PM UTC"
        );
        assert_eq!(
            datetime(Some("2026-02-19T13:03:00-08:00")),
            "Thu, Feb 19 2026 9:03 PM UTC"
        );
        assert_eq!(datetime(None), "-");
        assert_eq!(datetime(Some("yesterday")), "yesterday");
    }
}
