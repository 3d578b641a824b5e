//! Timestamps: this file owns [`Precision`], the unit of the timestamps in a write body, as
//! named by the `precision` query parameter of `/write` and `/api/v2/write`. It must never
//! read a clock: a point without a timestamp gets the default its caller passes in.

/// Unit of the timestamps in a write body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    Ns,
    Us,
    Ms,
    S,
    M,
    H,
}

impl Precision {
    /// v1 `/write` words: "ns" (also the default when absent), "us", "u", "ms", "s", "m", "h".
    /// Anything else -> None.
    ///
    /// Also accepted, because InfluxDB 1.8's v1 handler accepts them: "n" (nanoseconds) and
    /// "" (`?precision=` reads the same as an absent parameter in Go's URL API).
    pub fn from_v1(s: &str) -> Option<Precision> {
        match s {
            "" | "n" | "ns" => Some(Precision::Ns),
            "u" | "us" => Some(Precision::Us),
            "ms" => Some(Precision::Ms),
            "s" => Some(Precision::S),
            "m" => Some(Precision::M),
            "h" => Some(Precision::H),
            _ => None,
        }
    }

    /// v2 `/api/v2/write` words: "ns", "us", "ms", "s". Anything else -> None.
    ///
    /// "" is also accepted as the default (nanoseconds), like InfluxDB's v2 handler does.
    pub fn from_v2(s: &str) -> Option<Precision> {
        match s {
            "" | "ns" => Some(Precision::Ns),
            "us" => Some(Precision::Us),
            "ms" => Some(Precision::Ms),
            "s" => Some(Precision::S),
            _ => None,
        }
    }

    pub fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
            Precision::M => 60 * 1_000_000_000,
            Precision::H => 3_600 * 1_000_000_000,
        }
    }
}
