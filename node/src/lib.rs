//! The hallmark node library.
