//! The state the engine holds, each kind in a type that owns its maps and
//! keeps their invariants: [`tunnels`] (tunnels, which serves each agent,
//! open tunnels per IP), [`calls`] (calls and their request ids) and
//! [`directory`] (owner look-ups). The behaviour modules change state only
//! through them; these modules know nothing of [`Relay`](crate::Relay).

pub(crate) mod calls;
pub(crate) mod directory;
pub(crate) mod tunnels;
