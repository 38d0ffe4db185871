//! cutover-store
