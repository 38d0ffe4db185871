//! The fleet plane: MQTT broker and transport, the orchestrator that drives the rollout engine, artifacts, and the agent endpoints.
