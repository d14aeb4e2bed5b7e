//! Resolves how runs of a workflow are started and admitted: `[workflow]
//! schedule = { cron, timezone, input, overlap }` into an
//! [`app::schedule::Schedule`] (the pattern and zone parse, the policy is a
//! known one, and the input is JSON that the workflow's `input-schema`
//! accepts: a scheduled run has no caller to tell that it does not), and
//! `concurrency = { key, limit, priority }`. It may not compute ticks or
//! evaluate keys (the schedule and the host do).

use super::{File, Names, Resolver, to_json};
use crate::app::Concurrency;
use crate::app::schedule::{Overlap, Schedule, ScheduleError};
use crate::json::Json;
use crate::manifest::authored::ConcurrencyTable;
use crate::manifest::authored::ScheduleTable;
use crate::schema::Schema;
use toml::Spanned;

impl Resolver<'_> {
    pub(super) fn schedule(
        &mut self,
        file: &File,
        table: &Spanned<ScheduleTable>,
        input_schema: Option<&Schema>,
    ) -> Option<Schedule> {
        let section = table.get_ref();
        let input = match &section.input {
            None => Json::from_value(serde_json::json!({})),
            Some(value) => match to_json(value.get_ref()) {
                Ok(json) => json,
                Err(e) => {
                    self.error(
                        file,
                        value.span(),
                        format!("the schedule's input cannot be JSON: {e}"),
                    );
                    return None;
                }
            },
        };
        let overlap = match &section.overlap {
            None => Overlap::Skip,
            Some(name) => match Overlap::from_name(name.get_ref()) {
                Some(overlap) => overlap,
                None => {
                    self.error(
                        file,
                        name.span(),
                        format!("'{}' is not an overlap policy", name.get_ref()),
                    );
                    self.add_help("use \"skip\" (the default: a tick is dropped while the run of an earlier one is unfinished), \"queue\" (it waits for that run to end) or \"allow\"");
                    return None;
                }
            },
        };
        let timezone = section
            .timezone
            .as_ref()
            .map_or("UTC", |zone| zone.get_ref().as_str());
        let schedule = match Schedule::parse(section.cron.get_ref(), timezone, input, overlap) {
            Ok(schedule) => schedule,
            Err(e @ ScheduleError::Cron(_)) => {
                self.error(file, section.cron.span(), e.to_string());
                self.add_help("five fields: minute hour day-of-month month day-of-week (\"0 3 * * *\" is 03:00 every day), or six with seconds first; or @hourly, @daily, @weekly, @monthly");
                return None;
            }
            Err(e @ ScheduleError::Timezone(_)) => {
                let span = section
                    .timezone
                    .as_ref()
                    .map_or(table.span(), |zone| zone.span());
                self.error(file, span, e.to_string());
                let near = chrono_tz::TZ_VARIANTS
                    .iter()
                    .map(|zone| zone.name())
                    .max_by(|a, b| {
                        strsim::jaro_winkler(a, timezone)
                            .total_cmp(&strsim::jaro_winkler(b, timezone))
                    })
                    .filter(|near| strsim::jaro_winkler(near, timezone) > 0.8);
                self.add_help(match near {
                    Some(near) => format!("did you mean \"{near}\"? Time zones are IANA names (\"Europe/Paris\", \"America/New_York\", \"UTC\")"),
                    None => "time zones are IANA names (\"Europe/Paris\", \"America/New_York\", \"UTC\")".to_string(),
                });
                return None;
            }
        };
        if let Some(schema) = input_schema {
            let violations = schema.violations(schedule.input.value());
            if !violations.is_empty() {
                let span = section
                    .input
                    .as_ref()
                    .map_or(table.span(), |input| input.span());
                self.error(
                    file,
                    span,
                    format!(
                        "the schedule's input does not match the workflow's input-schema: {}",
                        violations.join("; ")
                    ),
                );
                self.add_help(format!(
                    "every scheduled run starts with this input; make it match {}",
                    crate::app::display_path(schema.path())
                ));
                return None;
            }
        }
        Some(schedule)
    }

    /// A scheduled run's key and priority come from the schedule's input:
    /// they must evaluate (else every tick's run would be refused).
    pub(super) fn check_scheduled_queue(
        &mut self,
        file: &File,
        table: &Spanned<ScheduleTable>,
        schedule: &Schedule,
        concurrency: &Concurrency,
    ) {
        let scope = crate::expr::Scope::with_input(schedule.input.clone());
        for (what, expr) in [
            ("key", &concurrency.key),
            ("priority", &concurrency.priority),
        ] {
            let Some(expr) = expr else { continue };
            let problem = match expr.eval(&scope) {
                Err(e) => Some(e.to_string()),
                Ok(value) if what == "priority" && value.value().as_f64().is_none() => {
                    Some(format!("it gives {value}, not a number"))
                }
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                let span = table
                    .get_ref()
                    .input
                    .as_ref()
                    .map_or(table.span(), |input| input.span());
                self.error(
                    file,
                    span,
                    format!("the concurrency {what} cannot be computed from the schedule's input: {problem}"),
                );
                self.add_help(format!(
                    "every scheduled run starts with this input; give it what `{}` reads",
                    expr.source()
                ));
            }
        }
    }

    /// `[workflow] concurrency`: the key and priority are expressions over
    /// the input; the limit is at least 1.
    pub(super) fn concurrency(
        &mut self,
        file: &File,
        table: &Spanned<ConcurrencyTable>,
    ) -> Option<Concurrency> {
        let section = table.get_ref();
        let mut names = Names::default();
        names.bound.insert("input".into(), 0);
        let key = match &section.key {
            Some(text) => Some(self.expression(file, text, &names)?),
            None => None,
        };
        let priority = match &section.priority {
            Some(text) => Some(self.expression(file, text, &names)?),
            None => None,
        };
        let limit = match &section.limit {
            None => 1,
            Some(limit) => match u32::try_from(*limit.get_ref()) {
                Ok(limit) if limit >= 1 => limit,
                _ => {
                    self.error(
                        file,
                        limit.span(),
                        format!(
                            "a concurrency limit is a whole number from 1, not {}",
                            limit.get_ref()
                        ),
                    );
                    self.add_help("limit = 1 runs one run of a key at a time (the default)");
                    return None;
                }
            },
        };
        Some(Concurrency {
            key,
            limit,
            priority,
        })
    }
}
