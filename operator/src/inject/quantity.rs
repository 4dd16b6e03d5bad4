//! Parsing of Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`), so a bad annotation is
//! refused with a clear message instead of producing a pod the API server rejects later.

use super::quoted;

/// The value of a non-negative quantity, as a float: precise enough to compare a request with a
/// limit, which is all it is used for. `Err` explains what is wrong.
pub(crate) fn parse(s: &str) -> Result<f64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty quantity".into());
    }
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.starts_with('-') {
        return Err("a resource quantity cannot be negative".into());
    }
    if !valid_decimal(digits) {
        return Err(format!(
            "{} is not a quantity such as 100m, 0.5, 128Mi or 1G",
            quoted(s)
        ));
    }
    let value: f64 = digits
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("{} is not a number meshop can use", quoted(s)))?;
    let value = value
        * multiplier(suffix).ok_or_else(|| {
            format!(
                "unknown unit {} in {}; use m, k, M, G, Ki, Mi, Gi, ...",
                quoted(suffix),
                quoted(s)
            )
        })?;
    if !value.is_finite() {
        return Err(format!("{} is too large", quoted(s)));
    }
    Ok(value)
}

/// `123`, `1.5`, `.5` or `5.`, digits only.
fn valid_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    all_digits(whole) && frac.is_none_or(all_digits) && (whole.len() + frac.map_or(0, str::len)) > 0
}

fn multiplier(suffix: &str) -> Option<f64> {
    let binary = |exp: i32| Some(1024f64.powi(exp));
    let decimal = |exp: i32| Some(10f64.powi(exp));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        _ => {
            // A decimal exponent: e3, E-2, e+6.
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            decimal(exp.parse::<i32>().ok()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn accepts_kubernetes_quantities() {
        let cases = [
            ("100m", 0.1),
            ("2", 2.0),
            ("0.5", 0.5),
            (".5", 0.5),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("+1k", 1000.0),
            ("2E-1", 0.2),
        ];
        for (s, want) in cases {
            let got = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert!(
                (got - want).abs() < 1e-9 * want.max(1.0),
                "{s}: {got} != {want}"
            );
        }
    }

    #[test]
    fn refuses_garbage() {
        for s in [
            "", "abc", "1.2.3", "-1", "10mb", "1 Gi", "Gi", "1e", "1ex", ".",
        ] {
            assert!(parse(s).is_err(), "{s:?} should be refused");
        }
        assert!(parse("-100m").unwrap_err().contains("negative"));
    }
}
