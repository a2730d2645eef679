//! Shared helpers for the simulation and end-to-end tests.

pub mod harness;
