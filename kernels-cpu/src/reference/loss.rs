//! loss reference kernel (being written).
