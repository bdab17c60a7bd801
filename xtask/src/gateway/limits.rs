//! What API Gateway enforces before it invokes anything: the API key a
//! key-required method needs, the usage plan's throttle and quota for that
//! key, and the stage's method throttling. Pure bookkeeping over the
//! configuration [`super::config`] loads (the clock is an argument), so it
//! is tested without a gateway.
//!
//! - A key-required method without a key of this stage's usage plans, or
//!   with a disabled one: 403 `{"message":"Forbidden"}`.
//! - Over the key's quota for the period: 429 `{"message":"Limit Exceeded"}`.
//! - Over the key's throttle, or the stage's for the method: 429
//!   `{"message":"Too Many Requests"}`.
//!
//! Throttles are token buckets as API Gateway documents them: `burst`
//! tokens at most, refilled at `rate` per second, one per request; the
//! stage's `*/*` setting gives every method a bucket of its own, a usage
//! plan every key one. A refused request takes nothing from a quota, nor
//! a token from any bucket.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

/// Requests per second (steady) and burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    pub rate: f64,
    pub burst: f64,
}

/// Requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "DAY" => Some(Period::Day),
            "WEEK" => Some(Period::Week),
            "MONTH" => Some(Period::Month),
            _ => None,
        }
    }

    /// Which period (UTC) `at` falls in, as a number that changes exactly
    /// when a new one starts: days, weeks from a Monday, months.
    fn window(self, at: SystemTime) -> i64 {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        let days = seconds.div_euclid(86_400);
        match self {
            Period::Day => days,
            // 1970-01-01 was a Thursday: day 4 is the first Monday.
            Period::Week => (days - 4).div_euclid(7),
            Period::Month => {
                let (year, month) = civil_month(days);
                year * 12 + month
            }
        }
    }
}

/// The (year, month 0..12) of a day since the epoch (Howard Hinnant's
/// `civil_from_days`).
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month - 1)
}

/// What an API key grants on one stage: its usage plan's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub key_id: String,
    pub plan_id: String,
    pub enabled: bool,
    pub throttle: Option<Throttle>,
    pub quota: Option<Quota>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403 `Forbidden`: no valid key of this stage's plans.
    Forbidden,
    /// 429 `Limit Exceeded`: the key's quota is spent.
    QuotaSpent,
    /// 429 `Too Many Requests`: a throttle's bucket is empty.
    Throttled,
}

#[derive(Debug)]
struct Bucket {
    throttle: Throttle,
    tokens: f64,
    at: Instant,
}

/// The buckets and quota counts of one gateway.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: HashMap<String, Bucket>,
    /// Key id -> (window, requests admitted in it).
    used: HashMap<String, (i64, u64)>,
}

impl Limiter {
    /// Admits a request or says why not. `method` names the stage and
    /// method (`staging GET /files/{id}`), `key` is the grant of the
    /// request's `x-api-key` (when the method requires one: `Some(None)`
    /// is a key this stage does not know, or none), and `stage` the
    /// stage's method throttle.
    pub fn admit(
        &mut self,
        method: &str,
        key: Option<Option<&Grant>>,
        stage: Option<Throttle>,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Refusal> {
        let grant = match key {
            None => None,
            Some(Some(grant)) if grant.enabled => Some(grant),
            Some(_) => return Err(Refusal::Forbidden),
        };
        // A key's counts are its plan's (a key may be in plans of other
        // stages too).
        let counted = grant.map(|grant| format!("{}/{}", grant.plan_id, grant.key_id));
        if let (Some(grant), Some(counted)) = (grant, &counted)
            && let Some(quota) = grant.quota
        {
            let window = quota.period.window(wall);
            let used = match self.used.get(counted) {
                Some((at, used)) if *at == window => *used,
                _ => 0,
            };
            if used >= quota.limit {
                return Err(Refusal::QuotaSpent);
            }
        }
        let mut buckets = Vec::new();
        if let (Some(grant), Some(counted)) = (grant, &counted)
            && let Some(throttle) = grant.throttle
        {
            buckets.push((format!("key {counted}"), throttle));
        }
        if let Some(throttle) = stage {
            buckets.push((format!("method {method}"), throttle));
        }
        // Every bucket must have a token before any is taken.
        if !buckets
            .iter()
            .all(|(id, throttle)| self.refill(id, *throttle, now) >= 1.0)
        {
            return Err(Refusal::Throttled);
        }
        for (id, _) in &buckets {
            if let Some(bucket) = self.buckets.get_mut(id) {
                bucket.tokens -= 1.0;
            }
        }
        if let (Some(grant), Some(counted)) = (grant, counted)
            && let Some(quota) = grant.quota
        {
            let window = quota.period.window(wall);
            let entry = self.used.entry(counted).or_insert((window, 0));
            if entry.0 != window {
                *entry = (window, 0);
            }
            entry.1 += 1;
        }
        Ok(())
    }

    /// The tokens bucket `id` holds at `now` (a new bucket, or one whose
    /// limits changed, starts full).
    fn refill(&mut self, id: &str, throttle: Throttle, now: Instant) -> f64 {
        let bucket = self.buckets.entry(id.to_owned()).or_insert(Bucket {
            throttle,
            tokens: throttle.burst,
            at: now,
        });
        if bucket.throttle != throttle {
            *bucket = Bucket {
                throttle,
                tokens: throttle.burst,
                at: now,
            };
        }
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * throttle.rate).min(throttle.burst);
        bucket.at = now;
        bucket.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn grant(throttle: Option<Throttle>, quota: Option<Quota>) -> Grant {
        Grant {
            key_id: "k1".into(),
            plan_id: "p1".into(),
            enabled: true,
            throttle,
            quota,
        }
    }

    fn day(n: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(n * 86_400 + 3600)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut limiter = Limiter::default();
        let stage = Some(Throttle {
            rate: 2.0,
            burst: 3.0,
        });
        let start = Instant::now();
        let admit = |limiter: &mut Limiter, method: &str, at: Duration| {
            limiter.admit(method, None, stage, start + at, day(0))
        };
        for _ in 0..3 {
            assert_eq!(admit(&mut limiter, "GET /a", Duration::ZERO), Ok(()));
        }
        assert_eq!(
            admit(&mut limiter, "GET /a", Duration::ZERO),
            Err(Refusal::Throttled)
        );
        // Each method has a bucket of its own.
        assert_eq!(admit(&mut limiter, "GET /b", Duration::ZERO), Ok(()));
        // 2 per second: one more after half a second, not before.
        assert_eq!(
            admit(&mut limiter, "GET /a", Duration::from_millis(400)),
            Err(Refusal::Throttled)
        );
        assert_eq!(
            admit(&mut limiter, "GET /a", Duration::from_millis(500)),
            Ok(())
        );
        // Never more than the burst, however long it rested.
        let later = Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(admit(&mut limiter, "GET /a", later), Ok(()));
        }
        assert_eq!(
            admit(&mut limiter, "GET /a", later),
            Err(Refusal::Throttled)
        );
        // No stage throttle: no limit.
        for _ in 0..1000 {
            assert_eq!(limiter.admit("GET /a", None, None, start, day(0)), Ok(()));
        }
    }

    #[test]
    fn a_key_needs_a_grant_and_spends_its_quota() {
        let mut limiter = Limiter::default();
        let now = Instant::now();
        assert_eq!(
            limiter.admit("m", Some(None), None, now, day(0)),
            Err(Refusal::Forbidden)
        );
        let mut disabled = grant(None, None);
        disabled.enabled = false;
        assert_eq!(
            limiter.admit("m", Some(Some(&disabled)), None, now, day(0)),
            Err(Refusal::Forbidden)
        );

        let quota = Some(Quota {
            limit: 2,
            period: Period::Day,
        });
        let key = grant(None, quota);
        assert_eq!(
            limiter.admit("m", Some(Some(&key)), None, now, day(0)),
            Ok(())
        );
        assert_eq!(
            limiter.admit("m", Some(Some(&key)), None, now, day(0)),
            Ok(())
        );
        assert_eq!(
            limiter.admit("m", Some(Some(&key)), None, now, day(0)),
            Err(Refusal::QuotaSpent)
        );
        // The next day (UTC) starts afresh.
        assert_eq!(
            limiter.admit("m", Some(Some(&key)), None, now, day(1)),
            Ok(())
        );

        // A request the stage throttles takes nothing from the quota.
        let mut limiter = Limiter::default();
        let stage = Some(Throttle {
            rate: 0.0,
            burst: 1.0,
        });
        assert_eq!(
            limiter.admit("m", Some(Some(&key)), stage, now, day(0)),
            Ok(())
        );
        for _ in 0..5 {
            assert_eq!(
                limiter.admit("m", Some(Some(&key)), stage, now, day(0)),
                Err(Refusal::Throttled)
            );
        }
        assert_eq!(
            limiter.admit("m", Some(Some(&key)), None, now, day(0)),
            Ok(())
        );
        assert_eq!(
            limiter.admit("m", Some(Some(&key)), None, now, day(0)),
            Err(Refusal::QuotaSpent)
        );
    }

    #[test]
    fn a_request_the_stage_refuses_takes_no_token_of_the_key() {
        let mut limiter = Limiter::default();
        let now = Instant::now();
        let key = grant(
            Some(Throttle {
                rate: 0.0,
                burst: 2.0,
            }),
            None,
        );
        let closed = Some(Throttle {
            rate: 0.0,
            burst: 1.0,
        });
        assert_eq!(
            limiter.admit("a", Some(Some(&key)), closed, now, day(0)),
            Ok(())
        );
        for _ in 0..3 {
            assert_eq!(
                limiter.admit("a", Some(Some(&key)), closed, now, day(0)),
                Err(Refusal::Throttled)
            );
        }
        // The key's second token is still there for another method.
        assert_eq!(
            limiter.admit("b", Some(Some(&key)), None, now, day(0)),
            Ok(())
        );
        assert_eq!(
            limiter.admit("c", Some(Some(&key)), None, now, day(0)),
            Err(Refusal::Throttled)
        );
    }

    #[test]
    fn a_key_throttle_spans_the_methods() {
        let mut limiter = Limiter::default();
        let now = Instant::now();
        let key = grant(
            Some(Throttle {
                rate: 1.0,
                burst: 2.0,
            }),
            None,
        );
        assert_eq!(
            limiter.admit("a", Some(Some(&key)), None, now, day(0)),
            Ok(())
        );
        assert_eq!(
            limiter.admit("b", Some(Some(&key)), None, now, day(0)),
            Ok(())
        );
        assert_eq!(
            limiter.admit("c", Some(Some(&key)), None, now, day(0)),
            Err(Refusal::Throttled)
        );
    }

    #[test]
    fn periods_change_at_utc_midnight_monday_and_the_first() {
        let at = |text: &str| {
            let seconds: u64 = match text {
                "1970-01-01T00:00" => 0,
                "1970-01-04T23:59" => 3 * 86_400 + 86_340,
                "1970-01-05T00:00" => 4 * 86_400,
                "1970-01-31T23:59" => 30 * 86_400 + 86_340,
                "1970-02-01T00:00" => 31 * 86_400,
                // 2024-02-29 (a leap day) and 2024-03-01.
                "2024-02-29T12:00" => 19_782 * 86_400 + 43_200,
                "2024-03-01T00:00" => 19_783 * 86_400,
                other => panic!("{other}"),
            };
            SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
        };
        let same = |period: Period, a: &str, b: &str| period.window(at(a)) == period.window(at(b));
        assert!(!same(Period::Day, "1970-01-04T23:59", "1970-01-05T00:00"));
        assert!(same(Period::Week, "1970-01-01T00:00", "1970-01-04T23:59"));
        assert!(!same(Period::Week, "1970-01-04T23:59", "1970-01-05T00:00"));
        assert!(same(Period::Month, "1970-01-01T00:00", "1970-01-31T23:59"));
        assert!(!same(Period::Month, "1970-01-31T23:59", "1970-02-01T00:00"));
        assert!(!same(Period::Month, "2024-02-29T12:00", "2024-03-01T00:00"));
        assert_eq!(civil_month(19_782), (2024, 1));
        assert_eq!(Period::parse("DAY"), Some(Period::Day));
        assert_eq!(Period::parse("day"), None);
    }
}
