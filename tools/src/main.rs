//! The `spore` command-line program (being set up).
fn main() {}
