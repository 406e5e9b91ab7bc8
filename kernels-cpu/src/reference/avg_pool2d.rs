//! avg_pool2d reference kernel (being written).
