//! Independent verification of Hallmark's Bitcoin anchors: the auditor's checks of a whole
//! checkpoint chain against a bitcoind of the auditor's own ([`audit`]), and the export of one
//! event's anchoring as an OpenTimestamps proof ([`ots`]).

pub mod audit;
pub mod ots;
