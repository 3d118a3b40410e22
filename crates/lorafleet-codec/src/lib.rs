//! Pure codecs used by lorafleet: bytes in, typed values out, no I/O.
