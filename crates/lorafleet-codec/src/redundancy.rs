//! Redundancy advice (work in progress).
