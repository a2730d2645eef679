//! Shared helpers for the simulation and end-to-end tests.

pub mod child;
pub mod cluster;
pub mod describe;
pub mod e2e;
pub mod harness;
pub mod noise;
pub mod origin;
pub mod prom;
pub mod redis;
pub mod sim;
