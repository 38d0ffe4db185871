//! Application releases: export, install, start, health-check, switch, roll back.
