//! Numbers for people: byte sizes in binary units, counts with separators.

/// `1536` -> `"1.5 KiB"`; bytes below 1 KiB are printed exactly.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A block size in at most five characters, for labels in small boxes:
/// `48`, `1.5K`, `64K`, `2M`.
pub fn short_size(n: u64) -> String {
    fn scaled(n: u64, unit: u64, suffix: char) -> String {
        if n.is_multiple_of(unit) || n / unit >= 10 {
            format!("{}{suffix}", n / unit)
        } else {
            format!("{:.1}{suffix}", n as f64 / unit as f64)
        }
    }
    match n {
        0..1024 => n.to_string(),
        1024..1_048_576 => scaled(n, 1024, 'K'),
        1_048_576..1_073_741_824 => scaled(n, 1_048_576, 'M'),
        _ => scaled(n, 1_073_741_824, 'G'),
    }
}

/// `1234567` -> `"1,234,567"`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(32 << 20), "32.0 MiB");
        assert_eq!(short_size(48), "48");
        assert_eq!(short_size(1536), "1.5K");
        assert_eq!(short_size(65536), "64K");
        assert_eq!(short_size(3 << 20), "3M");
        assert_eq!(short_size(12_345_678), "11M");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
