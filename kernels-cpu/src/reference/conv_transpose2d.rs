//! conv_transpose2d reference kernel (being written).
