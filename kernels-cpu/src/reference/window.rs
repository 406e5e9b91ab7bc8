//! window reference kernel (being written).
