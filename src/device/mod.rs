//! Device configuration (power modes, performance levels) and sensors (temperatures, power).

mod power;

pub use power::PowerMode;
