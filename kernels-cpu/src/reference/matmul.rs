//! matmul reference kernel (being written).
