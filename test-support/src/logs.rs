//! Reading the logs of the programs under test (tracing's text format, one event a line, starting with an RFC 3339
//! UTC timestamp): lines with their times, waiting for a line, and the end of a log for a failure message.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::wait::wait_for;

/// Unix time in seconds (with fractions) of a log line that starts with tracing's RFC 3339 UTC timestamp
/// (`2026-01-02T03:04:05.678901Z`).
pub fn line_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|v| v.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss = t.next()?.parse::<f64>().ok()?;
    // Days since 1970-01-01 of the date (proleptic Gregorian calendar, counted in eras of 400 years).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// The current Unix time in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The log at `path` (empty while it does not exist).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The lines of the log at `path` that contain `needle`, with their times.
pub fn lines_with(path: &Path, needle: &str) -> Vec<(f64, String)> {
    read(path)
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| Some((line_time(l)?, l.to_string())))
        .collect()
}

/// Waits until the log at `path` has a line containing `needle` logged after `after` (Unix seconds); returns the
/// line and its time.
pub fn wait_line_after(
    path: &Path,
    needle: &str,
    after: f64,
    timeout: Duration,
) -> Result<(f64, String)> {
    wait_for(
        timeout,
        &format!("{needle:?} in {} after {after:.3}", path.display()),
        || {
            Ok(lines_with(path, needle)
                .into_iter()
                .find(|(t, _)| *t > after))
        },
    )
}

/// The last `n` lines of the log at `path`, under a heading naming it.
pub fn tail(path: &Path, n: usize) -> String {
    let text = read(path);
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "----- {} (last {n} lines)\n{}\n",
        path.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

/// Prints the end of some logs when the test fails: hold it for the test's length (`let _logs = ...`), and a
/// failing assertion or `unwrap` anywhere shows what the programs said.
#[derive(Debug)]
pub struct OnFailure {
    paths: Vec<std::path::PathBuf>,
}

/// How many lines of each log [`OnFailure`] prints.
const FAILURE_LINES: usize = 200;

impl OnFailure {
    /// Prints the logs at `paths` should the test fail.
    pub fn new(paths: impl IntoIterator<Item = std::path::PathBuf>) -> OnFailure {
        OnFailure {
            paths: paths.into_iter().collect(),
        }
    }
}

impl Drop for OnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for path in &self.paths {
                eprintln!("{}", tail(path, FAILURE_LINES));
            }
        }
    }
}
