//! [`Timestamp`]: when a key or project was created and when a key expires, shown and
//! stored as RFC 3339 in UTC with whole seconds (`2027-01-01T00:00:00Z`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A point in time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// Now, truncated to the second (what is shown is what is stored).
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// The time as a [`SystemTime`].
    pub fn as_system_time(self) -> SystemTime {
        self.0
    }

    /// Whether this moment has passed.
    pub fn is_past(self) -> bool {
        self.0 <= SystemTime::now()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Timestamp {
        let secs = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_seconds(self.0).fmt(f)
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    /// Parses RFC 3339 in UTC (`2027-01-01T00:00:00Z`; fractions of a second are dropped).
    fn from_str(s: &str) -> Result<Timestamp, Error> {
        humantime::parse_rfc3339(s.trim())
            .map(Timestamp::from)
            .map_err(|err| Error::Invalid {
                field: "timestamp",
                reason: format!(
                    "{s:?} is not an RFC 3339 UTC time such as 2027-01-01T00:00:00Z ({err})"
                ),
            })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_serde() {
        let t: Timestamp = "2027-01-01T00:00:00Z".parse().expect("valid");
        assert_eq!(t.to_string(), "2027-01-01T00:00:00Z");
        let json = serde_json::to_string(&t).expect("serializes");
        assert_eq!(json, "\"2027-01-01T00:00:00Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).expect("parses"), t);
        let now = Timestamp::now();
        assert_eq!(
            now.to_string().parse::<Timestamp>().expect("own output"),
            now
        );
    }

    #[test]
    fn fractions_are_dropped_and_garbage_refused() {
        let t: Timestamp = "2027-01-01T00:00:00.750Z".parse().expect("valid");
        assert_eq!(t.to_string(), "2027-01-01T00:00:00Z");
        for bad in ["", "tomorrow", "2027-13-01T00:00:00Z", "2027-01-01"] {
            let err = bad.parse::<Timestamp>().expect_err(bad);
            assert!(err.to_string().contains("RFC 3339"), "{err}");
        }
    }

    #[test]
    fn past_and_future() {
        assert!(
            "2001-01-01T00:00:00Z"
                .parse::<Timestamp>()
                .expect("ok")
                .is_past()
        );
        assert!(
            !"2999-01-01T00:00:00Z"
                .parse::<Timestamp>()
                .expect("ok")
                .is_past()
        );
    }
}
