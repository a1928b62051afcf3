//! `[limits]`: per-client request rate and connection count, validated into [`Settings`].

use super::ConfigError;
use super::values::optional_at_least_one;
use crate::limit::Settings;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default, deserialize_with = "optional_at_least_one")]
    requests_per_second: Option<u32>,
    #[serde(default, deserialize_with = "optional_at_least_one")]
    burst: Option<u32>,
    #[serde(default, deserialize_with = "optional_at_least_one")]
    connections_per_client: Option<u32>,
}

/// The limits a `[limits]` section asks for (zero: no limit); `burst` defaults to the rate.
pub(super) fn settings(raw: Option<RawLimits>) -> Result<Settings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Settings::default());
    };
    if raw.burst.is_some() && raw.requests_per_second.is_none() {
        return Err(ConfigError::Invalid {
            key: "limits.burst".into(),
            message: "a burst needs limits.requests_per_second".into(),
        });
    }
    for (key, value) in [
        ("limits.requests_per_second", raw.requests_per_second),
        ("limits.burst", raw.burst),
    ] {
        if let Some(v) = value
            && v > crate::limit::MAX_RATE
        {
            return Err(ConfigError::Invalid {
                key: key.into(),
                message: format!("{v} is too large: at most {}", crate::limit::MAX_RATE),
            });
        }
    }
    let rate = raw.requests_per_second.unwrap_or(0);
    Ok(Settings {
        requests_per_second: rate,
        burst: raw.burst.unwrap_or(rate),
        connections_per_client: raw.connections_per_client.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const B: &str = "[[backends]]\nurl = \"http://127.0.0.1:9001\"\n";

    #[test]
    fn limits_parse_with_their_defaults() {
        let cases: &[(&str, Settings)] = &[
            ("", Settings::default()),
            ("[limits]\n", Settings::default()),
            (
                "[limits]\nrequests_per_second = 100\n",
                Settings {
                    requests_per_second: 100,
                    burst: 100,
                    connections_per_client: 0,
                },
            ),
            (
                "[limits]\nrequests_per_second = 100\nburst = 200\nconnections_per_client = 10\n",
                Settings {
                    requests_per_second: 100,
                    burst: 200,
                    connections_per_client: 10,
                },
            ),
            (
                "[limits]\nconnections_per_client = 3\n",
                Settings {
                    requests_per_second: 0,
                    burst: 0,
                    connections_per_client: 3,
                },
            ),
        ];
        for &(text, expected) in cases {
            let config = Config::parse(&format!("{text}{B}")).unwrap();
            assert_eq!(config.limits, expected, "{text}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[limits]\nburst = 5\n",
                &["limits.burst", "requests_per_second"],
            ),
            (
                "[limits]\nrequests_per_second = 0\n",
                &["requests_per_second"],
            ),
            (
                "[limits]\nrequests_per_second = 1.5\n",
                &["requests_per_second"],
            ),
            (
                "[limits]\nconnections_per_client = -1\n",
                &["connections_per_client"],
            ),
            ("[limits]\nrate = 1\n", &["rate"]),
            (
                "[limits]\nrequests_per_second = 5000000\n",
                &["limits.requests_per_second", "at most 1000000"],
            ),
            (
                "[limits]\nrequests_per_second = 5\nburst = 5000000\n",
                &["limits.burst", "too large"],
            ),
        ];
        for &(text, needles) in cases {
            let message = Config::parse(&format!("{text}{B}"))
                .unwrap_err()
                .to_string();
            for needle in needles {
                assert!(message.contains(needle), "{needle:?} in {message:?}");
            }
        }
    }
}
