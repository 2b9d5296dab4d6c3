//! connect-manager
