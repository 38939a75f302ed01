//! Hallmark p2p (work in progress, see the issues).
