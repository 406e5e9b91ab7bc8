//! binary reference kernel (being written).
