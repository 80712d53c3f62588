//! Helpers shared by the multi-host integration tests in `tests/tests/`: driving `scripts/lab.sh`, running
//! commands inside lab hosts, and tearing everything down also when a test fails.
