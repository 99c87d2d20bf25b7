//! Sizes on the command line (`-f2G`, `--size 512M`, `--max-decompression-memory 256M`,
//! `--quota-storage-bytes 2T`) and in messages: the one parser of byte sizes, for the server's
//! flags and the tool-chain alike.
//!
//! Suffixes are binary, as dd and the seed use them: `K` = 1024, `M` = 1024², `G`, `T`, `P`;
//! `KiB`/`KB` and lower case mean the same. A bare number is bytes; `s` is 512-byte sectors.

/// Parses `2G`, `512M`, `1.5G`, `4096`, `8s`. Fractions are rounded down to a whole byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("'{text}' is not a size (examples: 2G, 512M, 100K, 4096)");
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "s" => 9,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let too_big = || format!("'{text}' is too large");
    let mut bytes = whole.checked_shl(shift).filter(|b| b >> shift == whole);
    if !fraction.is_empty() {
        // digits after the point, as a fraction of the unit: 0.5G = 512M
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| bad())?;
        let denominator = 10u128.pow(digits.len() as u32);
        let part = ((numerator << shift) / denominator) as u64;
        bytes = bytes.and_then(|b| b.checked_add(part));
    }
    bytes.ok_or_else(too_big)
}

/// `1.5 GiB`, `512.0 MiB`, `300 B`: for people, not for parsing.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("100KiB"), Ok(100 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8s"), Ok(4096));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size(" 0 "), Ok(0));
    }

    #[test]
    fn nonsense_is_refused_with_an_example() {
        for bad in ["", "G", "2X", "1.2.3G", "-5M", "two"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("not a size"), "{bad}: {err}");
        }
        assert!(
            parse_size("99999999999P")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn human_sizes_pick_a_unit() {
        assert_eq!(human(300), "300 B");
        assert_eq!(human(2 << 30), "2.0 GiB");
        assert_eq!(human(1536 << 10), "1.5 MiB");
    }
}
