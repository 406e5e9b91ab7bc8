//! activation reference kernel (being written).
