//! A workflow's schedule (`[workflow] schedule = { cron, timezone, input,
//! overlap }`): which ticks it has, in its time zone. It only computes
//! times; when a tick is due and whether a run starts for it is the host's
//! business (it may not read a clock of its own: every time is passed in).

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::json::Json;

/// What a tick does while a run of an earlier tick is still unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// The tick is dropped (the default: no two scheduled runs at once).
    Skip,
    /// The tick waits for the unfinished run to end, then starts (ticks
    /// missed meanwhile collapse into it).
    Queue,
    /// The tick starts anyway.
    Allow,
}

impl Overlap {
    /// The names a manifest may write.
    pub const NAMES: [&'static str; 3] = ["skip", "queue", "allow"];

    /// The policy called `name`.
    pub fn from_name(name: &str) -> Option<Overlap> {
        match name {
            "skip" => Some(Overlap::Skip),
            "queue" => Some(Overlap::Queue),
            "allow" => Some(Overlap::Allow),
            _ => None,
        }
    }

    /// Its manifest name.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

/// A resolved schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The pattern as written.
    pub pattern: String,
    cron: Cron,
    /// The zone the pattern's fields are read in.
    pub timezone: Tz,
    /// The input every scheduled run gets.
    pub input: Json,
    /// What a tick does while an earlier one's run is unfinished.
    pub overlap: Overlap,
}

/// How many ticks [`Schedule::ticks_between`] counts at most (a schedule
/// every second, down for a year, would otherwise count for a while).
const COUNT_CAP: usize = 10_000;

impl Schedule {
    /// A schedule of `pattern` (five fields, or six with seconds first; the
    /// `@daily`-style nicknames) in `timezone` (an IANA name); why not, in
    /// words for a manifest error.
    pub fn parse(
        pattern: &str,
        timezone: &str,
        input: Json,
        overlap: Overlap,
    ) -> Result<Schedule, ScheduleError> {
        // No year field: a pattern pinned to a past year would never fire.
        let cron = croner::parser::CronParser::builder()
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| ScheduleError::Cron(e.to_string()))?;
        let timezone: Tz = timezone
            .parse()
            .map_err(|_| ScheduleError::Timezone(timezone.to_string()))?;
        let schedule = Schedule {
            pattern: pattern.to_string(),
            cron,
            timezone,
            input,
            overlap,
        };
        // A pattern that never matches (`0 0 30 2 *`) is an error too.
        if schedule.next_after(0).is_none() {
            return Err(ScheduleError::Cron(
                "it matches no time (a day that no month has?)".into(),
            ));
        }
        Ok(schedule)
    }

    /// `ms` in the schedule's zone, cut to the whole second (ticks fall on
    /// whole seconds, and croner keeps the fraction it is handed).
    fn zoned(&self, ms: i64) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms - ms.rem_euclid(1000))
            .single()
            .map(|t| t.with_timezone(&self.timezone))
    }

    /// What identifies the schedule's ticks: its pattern and time zone (a
    /// change of either starts the schedule afresh).
    pub fn identity(&self) -> String {
        format!("{} {}", self.pattern, self.timezone.name())
    }

    /// The latest tick at or before `now` (unix ms).
    pub fn latest_at(&self, now: i64) -> Option<i64> {
        let at = self.zoned(now)?;
        let previous = self
            .cron
            .find_previous_occurrence(&at, true)
            .ok()?
            .timestamp_millis();
        // In a daylight-saving gap croner's backward search lands on the
        // last second before the gap, its forward search on the first after
        // it: a tick is what the forward search gives, so both agree.
        Some(match self.next_after(previous - 1000) {
            Some(forward) if forward <= now => forward,
            _ => previous,
        })
    }

    /// The first tick after `after` (unix ms).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let at = self.zoned(after)?;
        self.cron
            .find_next_occurrence(&at, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// How many ticks fall after `after` and before `before` (both unix ms,
    /// neither counted), up to a cap.
    pub fn ticks_between(&self, after: i64, before: i64) -> usize {
        let mut count = 0;
        let mut at = after;
        while count < COUNT_CAP {
            match self.next_after(at) {
                Some(tick) if tick < before => {
                    count += 1;
                    at = tick;
                }
                _ => break,
            }
        }
        count
    }
}

/// Why a schedule does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The pattern.
    #[error("this is not a cron pattern: {0}")]
    Cron(String),
    /// The time zone.
    #[error("'{0}' is not a time zone")]
    Timezone(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn schedule(pattern: &str, timezone: &str) -> Schedule {
        Schedule::parse(
            pattern,
            timezone,
            Json::from_value(serde_json::json!({})),
            Overlap::Skip,
        )
        .unwrap()
    }

    #[test]
    fn a_daily_tick_is_read_in_its_time_zone() {
        let nightly = schedule("0 3 * * *", "Europe/Paris");
        // 03:00 in Paris is 02:00 UTC in winter, 01:00 in summer.
        assert_eq!(
            nightly.next_after(ms("2026-12-02T12:00:00Z")),
            Some(ms("2026-12-03T02:00:00Z"))
        );
        assert_eq!(
            nightly.next_after(ms("2026-07-01T12:00:00Z")),
            Some(ms("2026-07-02T01:00:00Z"))
        );
        assert_eq!(
            nightly.latest_at(ms("2026-12-02T12:00:00Z")),
            Some(ms("2026-12-02T02:00:00Z"))
        );
        // A tick is its own latest.
        assert_eq!(
            nightly.latest_at(ms("2026-12-02T02:00:00Z")),
            Some(ms("2026-12-02T02:00:00Z"))
        );
    }

    #[test]
    fn a_tick_in_a_daylight_saving_gap_is_the_same_seen_from_either_side() {
        // 02:30 does not exist in Paris on 2026-03-29 (02:00 → 03:00).
        let nightly = schedule("30 2 * * *", "Europe/Paris");
        let next = nightly.next_after(ms("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(nightly.latest_at(next + 5_000), Some(next));
        assert_eq!(nightly.latest_at(ms("2026-03-29T12:00:00Z")), Some(next));
    }

    #[test]
    fn seconds_are_an_optional_first_field() {
        let every_two = schedule("*/2 * * * * *", "UTC");
        assert_eq!(
            every_two.next_after(ms("2026-12-02T12:00:01Z")),
            Some(ms("2026-12-02T12:00:02Z"))
        );
        assert_eq!(
            every_two.ticks_between(ms("2026-12-02T12:00:00Z"), ms("2026-12-02T12:00:10Z")),
            4
        );
        // A time between ticks gives whole ticks, not itself.
        assert_eq!(
            every_two.latest_at(ms("2026-12-02T12:00:02.675Z")),
            Some(ms("2026-12-02T12:00:02Z"))
        );
        assert_eq!(
            every_two.next_after(ms("2026-12-02T12:00:02.675Z")),
            Some(ms("2026-12-02T12:00:04Z"))
        );
    }

    #[test]
    fn counting_missed_ticks_stops_at_a_cap() {
        let every_second = schedule("* * * * * *", "UTC");
        assert_eq!(
            every_second.ticks_between(ms("2020-01-01T00:00:00Z"), ms("2026-01-01T00:00:00Z")),
            COUNT_CAP
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_refused() {
        let input = || Json::from_value(serde_json::json!({}));
        assert!(matches!(
            Schedule::parse("0 3 * *", "UTC", input(), Overlap::Skip),
            Err(ScheduleError::Cron(_))
        ));
        assert!(matches!(
            Schedule::parse("0 3 * * *", "Europe/Pariss", input(), Overlap::Skip),
            Err(ScheduleError::Timezone(_))
        ));
        assert!(matches!(
            Schedule::parse("0 0 30 2 *", "UTC", input(), Overlap::Skip),
            Err(ScheduleError::Cron(_))
        ));
        // Seven fields (a year) are not a schedule.
        assert!(matches!(
            Schedule::parse("0 0 3 * * * 2020", "UTC", input(), Overlap::Skip),
            Err(ScheduleError::Cron(_))
        ));
    }
}
