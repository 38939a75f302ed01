//! Hallmark anchor (work in progress, see the issues).
