//! Hallmark integration-test harness.
