//! Value types that validate themselves while they are read: durations,
//! times of day, IANA time zones, percentages, CIDR networks, URLs of a given
//! scheme, listen addresses, and closed sets of names. A bad value fails
//! deserialization, so the error carries the value's own line and key path.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Declares an enum read from a closed set of names (case-insensitive,
/// `-` and `_` interchangeable), with "did you mean" on a misspelling.
macro_rules! name_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)*,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every accepted name, canonical spelling.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The canonical name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let norm = s.trim().to_ascii_lowercase().replace('-', "_");
                $(if norm == $text $(|| norm == $alias)* { return Ok($name::$variant); })+
                let mut message = format!("expected one of {}, found \"{s}\"", Self::NAMES.join(", "));
                if let Some(near) = crate::config::de::nearest(s, Self::NAMES.iter().copied()) {
                    message.push_str(&format!(" (did you mean {near}?)"));
                }
                Err(message)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = crate::config::values::any_text(d, "a name")?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use name_enum;

/// Reads a scalar as text whatever YAML type it resolved to (so that `10`
/// can name a thing as well as "ten").
pub(crate) fn any_text<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
) -> Result<String, D::Error> {
    struct V(&'static str);
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V(what))
}

/// Numbers and strings alike, for types that accept both ("30s" or 30).
enum Scalar {
    Num(f64),
    Text(String),
}

fn scalar<'de, D: Deserializer<'de>>(d: D, what: &'static str) -> Result<Scalar, D::Error> {
    struct V(&'static str);
    impl<'de> Visitor<'de> for V {
        type Value = Scalar;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
            Ok(Scalar::Text(v.to_string()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar::Num(v as f64))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
            Ok(Scalar::Num(v as f64))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
            Ok(Scalar::Num(v))
        }
    }
    d.deserialize_any(V(what))
}

/// A length of time: `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"2d"`, or a
/// number of seconds (`30`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Duration {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Duration {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

const DURATION_EXPECTED: &str =
    "a duration such as \"30s\", \"5m\", \"1h30m\", \"250ms\" or a number of seconds";

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Duration, String> {
        let bad = || format!("expected {DURATION_EXPECTED}, found \"{s}\"");
        let t = s.trim();
        if t.is_empty() {
            return Err(bad());
        }
        // Exact decimal arithmetic in nanoseconds: "8257403560ms" must not
        // come back as 8257403.560000001 s.
        let mut total: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad());
            }
            let number = &rest[..digits];
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = rest[..unit_len].trim();
            let nanos_per_unit: u128 = match unit {
                "" if rest.is_empty() => 1_000_000_000,
                "ms" => 1_000_000,
                "s" | "sec" | "secs" => 1_000_000_000,
                "m" | "min" | "mins" => 60_000_000_000,
                "h" | "hr" | "hours" => 3_600_000_000_000,
                "d" | "days" => 86_400_000_000_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if fraction.contains('.')
                || (whole.is_empty() && fraction.is_empty())
                || fraction.len() > 18
            {
                return Err(bad());
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let mut part = whole.checked_mul(nanos_per_unit).ok_or_else(bad)?;
            if !fraction.is_empty() {
                let scale = 10u128.pow(fraction.len() as u32);
                let f: u128 = fraction.parse().map_err(|_| bad())?;
                part += f * nanos_per_unit / scale;
            }
            total = total.checked_add(part).ok_or_else(bad)?;
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
        if secs >= 1_000_000_000_000 {
            return Err(bad());
        }
        Ok(Duration(std::time::Duration::new(
            secs,
            (total % 1_000_000_000) as u32,
        )))
    }
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e12).contains(&secs))
        .then(|| Duration(std::time::Duration::from_secs_f64(secs)))
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = self.0.as_secs();
        if s == 0 {
            f.write_str("0s")
        } else if s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match scalar(d, DURATION_EXPECTED)? {
            Scalar::Num(n) => seconds(n).ok_or_else(|| {
                de::Error::custom(format!("expected {DURATION_EXPECTED}, found {n}"))
            }),
            Scalar::Text(t) => t.parse().map_err(de::Error::custom),
        }
    }
}

/// A time of day written "HH:MM", 00:00 to 23:59.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    pub hour: u8,
    pub minute: u8,
}

impl TimeOfDay {
    /// Minutes since midnight.
    pub fn minutes(self) -> u32 {
        self.hour as u32 * 60 + self.minute as u32
    }
}

impl FromStr for TimeOfDay {
    type Err = String;
    fn from_str(s: &str) -> Result<TimeOfDay, String> {
        let bad =
            || format!("expected a time of day as \"HH:MM\" from 00:00 to 23:59, found \"{s}\"");
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
        if !digits(h) || h.len() > 2 || !digits(m) || m.len() != 2 {
            return Err(bad());
        }
        let hour: u8 = h.parse().map_err(|_| bad())?;
        let minute: u8 = m.parse().map_err(|_| bad())?;
        if hour > 23 || minute > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay { hour, minute })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_text(d, "a time of day \"HH:MM\"")?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// An IANA time zone name such as "UTC" or "Europe/Berlin".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(pub chrono_tz::Tz);

impl Default for TimeZone {
    fn default() -> Self {
        TimeZone(chrono_tz::UTC)
    }
}

impl FromStr for TimeZone {
    type Err = String;
    fn from_str(s: &str) -> Result<TimeZone, String> {
        if let Ok(tz) = s.trim().parse::<chrono_tz::Tz>() {
            return Ok(TimeZone(tz));
        }
        if let Some(tz) = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(s.trim()))
        {
            return Ok(TimeZone(*tz));
        }
        let mut message = format!(
            "expected an IANA time zone such as \"UTC\" or \"Europe/Berlin\", found \"{s}\""
        );
        if let Some(near) =
            crate::config::de::nearest(s, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
        {
            message.push_str(&format!(" (did you mean {near}?)"));
        }
        Err(message)
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl Serialize for TimeZone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_text(d, "an IANA time zone")?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// A percentage from 0 to 100: `10`, `12.5` or `"10%"`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default, Serialize)]
pub struct Percentage(f64);

impl Percentage {
    pub fn new(value: f64) -> Option<Percentage> {
        (value.is_finite() && (0.0..=100.0).contains(&value)).then_some(Percentage(value))
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// As a fraction from 0 to 1.
    pub fn fraction(self) -> f64 {
        self.0 / 100.0
    }
}

impl fmt::Display for Percentage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl<'de> Deserialize<'de> for Percentage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expected = "a percentage from 0 to 100";
        let (value, shown) = match scalar(d, expected)? {
            Scalar::Num(n) => (Some(n), n.to_string()),
            Scalar::Text(t) => (
                t.trim().trim_end_matches('%').trim().parse::<f64>().ok(),
                format!("\"{t}\""),
            ),
        };
        value
            .and_then(Percentage::new)
            .ok_or_else(|| de::Error::custom(format!("expected {expected}, found {shown}")))
    }
}

/// An IP network in CIDR notation ("10.0.0.0/8"); a bare address is a
/// network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub ipnet::IpNet);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let t = s.trim();
        if let Ok(net) = t.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net));
        }
        if let Ok(addr) = t.parse::<std::net::IpAddr>() {
            return Ok(Cidr(ipnet::IpNet::from(addr)));
        }
        Err(format!(
            "expected an IP network in CIDR notation such as \"10.0.0.0/8\" or an IP address, found \"{s}\""
        ))
    }
}

impl Cidr {
    /// Whether `addr` is inside; IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(std::net::IpAddr::V4)
                .unwrap_or(addr),
            v4 => v4,
        };
        self.0.contains(&addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_text(d, "an IP network")?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// Declares a URL type restricted to some schemes.
macro_rules! url_type {
    ($(#[$meta:meta])* $name:ident, [$($scheme:literal),+], $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(pub url::Url);

        impl $name {
            pub const SCHEMES: &'static [&'static str] = &[$($scheme),+];

            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                let bad = |why: String| format!("expected {} ({}), found \"{s}\"{why}", $what, Self::SCHEMES.join(", "));
                let url = url::Url::parse(s.trim()).map_err(|e| bad(format!(": {e}")))?;
                if !Self::SCHEMES.contains(&url.scheme()) {
                    return Err(bad(format!(": the scheme {} is not supported here", url.scheme())));
                }
                if url.cannot_be_a_base() || url.host_str().is_none_or(str::is_empty) {
                    return Err(bad(": it names no host".into()));
                }
                Ok($name(url))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.0.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                any_text(d, $what)?.parse().map_err(de::Error::custom)
            }
        }
    };
}

url_type!(
    /// An `http` or `https` URL with a host.
    HttpUrl, ["http", "https"], "an http(s) URL"
);
url_type!(
    /// An MQTT broker URL: `mqtt://host:1883`, `mqtts://host:8883`, or the
    /// `tcp`, `ssl`, `ws`, `wss` spellings.
    MqttUrl, ["mqtt", "mqtts", "tcp", "ssl", "ws", "wss"], "an MQTT broker URL"
);
url_type!(
    /// A Redis URL.
    RedisUrl, ["redis", "rediss"], "a Redis URL"
);

/// A database URL: `sqlite://path`, `sqlite::memory:`, or
/// `postgres://` / `postgresql://…`. The store parses the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for PostgreSQL, false for SQLite.
    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres")
    }
}

impl Default for DatabaseUrl {
    fn default() -> Self {
        DatabaseUrl("sqlite://cutover.db".into())
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<DatabaseUrl, String> {
        let t = s.trim();
        let bad = |why: &str| {
            format!(
                "expected a database URL (sqlite://FILE, postgres://… or postgresql://…), found \"{s}\"{why}"
            )
        };
        if t.starts_with("sqlite:") {
            if t.len() <= "sqlite:".len() {
                return Err(bad(": it names no file"));
            }
            return Ok(DatabaseUrl(t.to_string()));
        }
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            let url = url::Url::parse(t).map_err(|e| bad(&format!(": {e}")))?;
            if url.host_str().is_none_or(str::is_empty)
                && !url.query().unwrap_or("").contains("host=")
            {
                return Err(bad(": it names no host"));
            }
            return Ok(DatabaseUrl(t.to_string()));
        }
        Err(bad(""))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_text(d, "a database URL")?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// An address and port to listen on, such as "127.0.0.1:5001" or "[::]:5001".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr(pub std::net::SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<ListenAddr, String> {
        s.trim().parse().map(ListenAddr).map_err(|_| {
            format!("expected an address and port such as \"127.0.0.1:5001\", found \"{s}\"")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_text(d, "an address and port")?
            .parse()
            .map_err(de::Error::custom)
    }
}

/// An e-mail address (a light check: one `@`, something on each side, no spaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EmailAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<EmailAddress, String> {
        let t = s.trim();
        let ok = match t.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
                    && !t.contains(char::is_whitespace)
            }
            None => false,
        };
        if ok {
            Ok(EmailAddress(t.to_string()))
        } else {
            Err(format!(
                "expected an e-mail address such as \"ops@example.com\", found \"{s}\""
            ))
        }
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_text(d, "an e-mail address")?
            .parse()
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<Duration>().map(|d| d.get());
        assert_eq!(d("30s"), Ok(std::time::Duration::from_secs(30)));
        assert_eq!(d("5m"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(d("1h30m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(d("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(d("45"), Ok(std::time::Duration::from_secs(45)));
        assert!(d("soon").is_err());
        assert!(d("5 parsecs").is_err());
        assert!(d("-5s").is_err());
        assert_eq!(Duration::from_secs(300).to_string(), "5m");
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
    }

    #[test]
    fn times_of_day() {
        assert_eq!("02:00".parse::<TimeOfDay>().map(|t| t.minutes()), Ok(120));
        assert_eq!("23:59".parse::<TimeOfDay>().map(|t| t.minutes()), Ok(1439));
        assert!("25:61".parse::<TimeOfDay>().is_err());
        assert!("24:00".parse::<TimeOfDay>().is_err());
        assert!("2pm".parse::<TimeOfDay>().is_err());
        assert!("12:5".parse::<TimeOfDay>().is_err());
    }

    #[test]
    fn zones_networks_urls() {
        assert!("Europe/Berlin".parse::<TimeZone>().is_ok());
        let err = "Europe/Berln".parse::<TimeZone>().unwrap_err();
        assert!(err.contains("did you mean Europe/Berlin?"), "{err}");
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("10.0.0.1".parse::<Cidr>().is_ok());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        let net: Cidr = "192.168.1.0/24".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            net.contains(
                "::ffff:192.168.1.7"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}"))
            )
        );
        assert!(
            "https://api.company.com:3002/health"
                .parse::<HttpUrl>()
                .is_ok()
        );
        assert!("ftp://x".parse::<HttpUrl>().is_err());
        assert!("not a url".parse::<HttpUrl>().is_err());
        assert!("mqtt://broker.company.com:1883".parse::<MqttUrl>().is_ok());
        assert!("sqlite://cutover.db".parse::<DatabaseUrl>().is_ok());
        assert!(
            "postgresql://user:pass@db:5432/devicedb"
                .parse::<DatabaseUrl>()
                .is_ok()
        );
        assert!("mysql://db".parse::<DatabaseUrl>().is_err());
        assert!("a@b.co".parse::<EmailAddress>().is_ok());
        assert!("nobody".parse::<EmailAddress>().is_err());
        assert_eq!(Percentage::new(150.0), None);
    }
}
