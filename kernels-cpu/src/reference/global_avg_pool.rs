//! global_avg_pool reference kernel (being written).
