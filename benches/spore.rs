//! The one criterion benchmark binary.
fn main() {}
