//! softmax reference kernel (being written).
