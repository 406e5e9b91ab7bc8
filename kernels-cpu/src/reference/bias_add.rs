//! bias_add reference kernel (being written).
