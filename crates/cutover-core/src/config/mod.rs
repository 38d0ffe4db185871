//! The deployment configuration: schema, parsing with locations, validation.
