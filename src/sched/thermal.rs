//! Thermal control (filled in below).
