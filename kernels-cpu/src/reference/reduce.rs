//! reduce reference kernel (being written).
