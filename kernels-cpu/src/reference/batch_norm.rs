//! batch_norm reference kernel (being written).
