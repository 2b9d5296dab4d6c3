//! sink-verifier
