//! Units a policy may write after a number, and their scale to the base unit.

/// What a number measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitKind {
    /// A plain number (counts, ratios, fractions): no unit.
    Count,
    Bytes,
    /// Seconds.
    Duration,
    Celsius,
    Watts,
}

const BYTE_UNITS: [(&str, f64); 8] = [
    ("B", 1.0),
    ("KiB", 1024.0),
    ("MiB", 1048576.0),
    ("GiB", 1073741824.0),
    ("TiB", 1099511627776.0),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
];
const DURATION_UNITS: [(&str, f64); 4] = [("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("min", 60.0)];
const CELSIUS_UNITS: [(&str, f64); 1] = [("C", 1.0)];
const WATT_UNITS: [(&str, f64); 2] = [("W", 1.0), ("mW", 1e-3)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitError {
    /// Not a unit of any kind.
    Unknown,
    /// A unit after a plain number.
    Unexpected,
    /// A measured quantity written without its unit.
    Missing,
    /// A unit of another kind (`5 MiB` for a duration).
    WrongKind(UnitKind),
}

impl UnitKind {
    const ALL: [UnitKind; 4] = [UnitKind::Bytes, UnitKind::Duration, UnitKind::Celsius, UnitKind::Watts];

    fn units(self) -> &'static [(&'static str, f64)] {
        match self {
            UnitKind::Count => &[],
            UnitKind::Bytes => &BYTE_UNITS,
            UnitKind::Duration => &DURATION_UNITS,
            UnitKind::Celsius => &CELSIUS_UNITS,
            UnitKind::Watts => &WATT_UNITS,
        }
    }

    /// What a value of this kind is, for messages ("a size in bytes").
    pub fn describe(self) -> &'static str {
        match self {
            UnitKind::Count => "a number",
            UnitKind::Bytes => "a size in bytes",
            UnitKind::Duration => "a duration",
            UnitKind::Celsius => "a temperature",
            UnitKind::Watts => "a power",
        }
    }

    /// The units this kind accepts, for messages.
    pub fn unit_list(self) -> String {
        let names: Vec<&str> = self.units().iter().map(|(n, _)| *n).collect();
        super::check::one_of(&names)
    }
}

/// Factor from `unit` to the base unit of `kind`. Bytes may omit the unit.
pub fn scale(kind: UnitKind, unit: Option<&str>) -> Result<f64, UnitError> {
    let Some(unit) = unit else {
        return match kind {
            UnitKind::Count | UnitKind::Bytes => Ok(1.0),
            _ => Err(UnitError::Missing),
        };
    };
    if let Some((_, f)) = kind.units().iter().find(|(n, _)| *n == unit) {
        return Ok(*f);
    }
    match UnitKind::ALL.into_iter().find(|k| k.units().iter().any(|(n, _)| *n == unit)) {
        Some(_) if kind == UnitKind::Count => Err(UnitError::Unexpected),
        Some(other) => Err(UnitError::WrongKind(other)),
        None if kind == UnitKind::Count => Err(UnitError::Unexpected),
        None => Err(UnitError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_rejects() {
        assert_eq!(scale(UnitKind::Bytes, Some("MiB")), Ok(1048576.0));
        assert_eq!(scale(UnitKind::Bytes, None), Ok(1.0));
        assert_eq!(scale(UnitKind::Duration, Some("ms")), Ok(1e-3));
        assert_eq!(scale(UnitKind::Duration, None), Err(UnitError::Missing));
        assert_eq!(scale(UnitKind::Duration, Some("MiB")), Err(UnitError::WrongKind(UnitKind::Bytes)));
        assert_eq!(scale(UnitKind::Bytes, Some("Mb")), Err(UnitError::Unknown));
        assert_eq!(scale(UnitKind::Count, Some("s")), Err(UnitError::Unexpected));
    }
}
