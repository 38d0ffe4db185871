//! Server ↔ agent messages (MQTT topics and JSON payloads, versioned). Pure data.
