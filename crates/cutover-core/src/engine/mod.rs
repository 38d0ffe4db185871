//! The rollout engine: a deterministic state machine, `step(state, event, now) -> commands`.
