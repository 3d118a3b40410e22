//! TS004 v1 fragmentation, device side (work in progress).
