//! Noticing that a file changed so that its owner reloads it: [`ChangeWatch`], a sans-IO record of the modification
//! times seen, and [`modified`], the one place that reads them.
//!
//! A watch reports a change whenever the observed time differs from the last one, including the file disappearing
//! or reappearing; the reload that follows decides what a change means (a file that cannot be read keeps the
//! previous contents in force, see [`crate::policy::PolicyFile::reload_if_changed`]).

use std::path::Path;
use std::time::SystemTime;

/// The modification time of `path`, or `None` when it cannot be read.
pub fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The last modification time seen of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeWatch {
    seen: Option<SystemTime>,
}

impl ChangeWatch {
    /// A watch that has seen `seen` (the time read before the file's current contents were loaded).
    pub fn new(seen: Option<SystemTime>) -> Self {
        ChangeWatch { seen }
    }

    /// Record `observed`; true when it differs from the time seen before, i.e. when the file must be reloaded.
    pub fn observe(&mut self, observed: Option<SystemTime>) -> bool {
        let changed = observed != self.seen;
        self.seen = observed;
        changed
    }

    /// The last time seen.
    pub fn seen(&self) -> Option<SystemTime> {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_watch_reports_each_change_once() {
        let t = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        let mut watch = ChangeWatch::new(t(10));
        assert!(!watch.observe(t(10)));
        assert!(watch.observe(t(11)));
        assert!(!watch.observe(t(11)));
        // Disappearing and reappearing are changes too; an older time (a file replaced by a copy) as well.
        assert!(watch.observe(None));
        assert!(!watch.observe(None));
        assert!(watch.observe(t(5)));
        assert_eq!(watch.seen(), t(5));
        assert!(ChangeWatch::default().observe(t(1)));
    }

    #[test]
    fn modified_reads_the_file_time() {
        let dir = std::env::temp_dir().join(format!("tee-gateway-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        assert_eq!(modified(&file), None);
        std::fs::write(&file, b"x").unwrap();
        assert!(modified(&file).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
