//! dropout reference kernel (being written).
