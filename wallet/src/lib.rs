//! Hallmark wallet (work in progress, see the issues).
