//! depthwise_conv2d reference kernel (being written).
