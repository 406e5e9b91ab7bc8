//! Spore (being set up).
