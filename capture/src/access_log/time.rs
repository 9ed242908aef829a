//! Timestamps as web servers log them, to nanoseconds since the Unix epoch: the Common
//! Log Format's `10/Oct/2000:13:55:36 -0700`, ISO 8601 / RFC 3339
//! (`2000-10-10T13:55:36.123-07:00`, nginx's `$time_iso8601`) and epoch numbers (nginx's
//! `$msec` `1700000000.123`; seconds, milliseconds, microseconds or nanoseconds told
//! apart by their size).

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const NS: i64 = 1_000_000_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn number(text: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| range.contains(n))
}

/// Seconds since the epoch of a civil date and time in UTC.
fn civil_seconds(date: (i64, i64, i64), time: (i64, i64, i64)) -> i64 {
    days_from_civil(date.0, date.1, date.2) * 86_400 + time.0 * 3600 + time.1 * 60 + time.2
}

/// `HH:MM:SS` to its parts.
fn clock(text: &str) -> Option<(i64, i64, i64)> {
    let mut parts = text.split(':');
    let h = number(parts.next()?, 0..=23)?;
    let m = number(parts.next()?, 0..=59)?;
    let s = number(parts.next()?, 0..=60)?;
    parts.next().is_none().then_some((h, m, s))
}

/// A `+hhmm`, `+hh:mm` or `Z` offset, in seconds east of UTC.
fn utc_offset(text: &str) -> Option<i64> {
    if text == "Z" || text == "z" {
        return Some(0);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = text[1..].replace(':', "");
    // Checked before slicing: a multi-byte character must not be cut.
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(sign * (number(&digits[..2], 0..=23)? * 3600 + number(&digits[2..], 0..=59)? * 60))
}

/// The Common Log Format's `10/Oct/2000:13:55:36 -0700` (without the brackets).
pub fn parse_clf(text: &str) -> Option<i64> {
    let (stamp, offset) = text.trim().split_once(' ')?;
    let (date, time) = stamp.split_once(':')?;
    let mut date = date.split('/');
    let day = number(date.next()?, 1..=31)?;
    let month_name = date.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as i64 + 1;
    let year = number(date.next()?, 0..=9999)?;
    let seconds = civil_seconds((year, month, day), clock(time)?) - utc_offset(offset.trim())?;
    Some(seconds * NS)
}

/// ISO 8601 / RFC 3339: `2000-10-10T13:55:36[.fraction](Z|±hh:mm)`; a space may stand for
/// the `T`; no offset means UTC.
pub fn parse_iso(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut date = date.split('-');
    let (year, month, day) =
        (number(date.next()?, 0..=9999)?, number(date.next()?, 1..=12)?, number(date.next()?, 1..=31)?);
    let zone_at = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (time, zone) = rest.split_at(zone_at);
    let (time, fraction) = time.split_once(['.', ',']).unwrap_or((time, ""));
    let offset = if zone.is_empty() { 0 } else { utc_offset(zone)? };
    let seconds = civil_seconds((year, month, day), clock(time)?) - offset;
    Some(seconds * NS + fraction_ns(fraction)?)
}

/// The nanoseconds of a decimal fraction's digits (`"123"` is 123 ms).
fn fraction_ns(digits: &str) -> Option<i64> {
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let kept: String = digits.chars().chain(std::iter::repeat('0')).take(9).collect();
    kept.parse().ok()
}

/// An epoch number: seconds (up to 11 integer digits, with an optional fraction),
/// milliseconds (up to 14), microseconds (up to 17), or nanoseconds.
pub fn parse_epoch(text: &str) -> Option<i64> {
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let value: i64 = number(whole, 0..=i64::MAX)?;
    let scale = match whole.len() {
        0..=11 => NS,
        12..=14 => 1_000_000,
        15..=17 => 1_000,
        _ => 1,
    };
    let fraction = fraction_ns(fraction)? / (NS / scale).max(1);
    value.checked_mul(scale)?.checked_add(fraction)
}

/// Any of the formats above.
pub fn parse_any(text: &str) -> Option<i64> {
    let text = text.trim().trim_start_matches('[').trim_end_matches(']');
    parse_epoch(text).or_else(|| parse_iso(text)).or_else(|| parse_clf(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formats_web_servers_log() {
        // date -u -d '2000-10-10T20:55:36Z' +%s = 971211336
        assert_eq!(parse_clf("10/Oct/2000:13:55:36 -0700"), Some(971_211_336 * NS));
        assert_eq!(parse_iso("2000-10-10T13:55:36-07:00"), Some(971_211_336 * NS));
        assert_eq!(parse_iso("2000-10-10 20:55:36.25Z"), Some(971_211_336 * NS + 250_000_000));
        assert_eq!(parse_iso("2000-10-10T20:55:36"), Some(971_211_336 * NS));
        assert_eq!(parse_epoch("971211336.123"), Some(971_211_336_123_000_000));
        assert_eq!(parse_epoch("971211336123"), Some(971_211_336_123_000_000));
        assert_eq!(parse_epoch("971211336123456"), Some(971_211_336_123_456_000));
        assert_eq!(parse_any("[10/Oct/2000:13:55:36 +0000]"), Some(971_186_136 * NS));
        // Leap day, and a date before the epoch.
        assert_eq!(parse_iso("2024-02-29T00:00:00Z"), Some(1_709_164_800 * NS));
        assert_eq!(parse_iso("1969-12-31T23:59:59Z"), Some(-NS));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "-", "10/Foo/2000:13:55:36 -0700", "32/Oct/2000:13:55:36 -0700", "2000-13-01T00:00:00Z", "x1"] {
            assert_eq!(parse_any(bad), None, "{bad:?}");
        }
        assert_eq!(parse_clf("10/Oct/2000:13:55:36"), None, "CLF always has an offset");
        // A multi-byte character where the offset's digits are (it panicked).
        assert_eq!(parse_clf("10/Oct/2000:13:55:36 +1\u{20ac}"), None);
        assert_eq!(parse_iso("2000-10-10T13:55:36+1\u{20ac}"), None);
    }
}
