//! Without the `compression` feature (the appliance core): nothing is
//! compressed. Negotiation asks [`AVAILABLE`] first, so no stream is ever
//! framed compressed and these are never called.

/// This build does not compress.
pub const AVAILABLE: bool = false;

/// Never called in this build; returns nothing.
pub fn segment(_: &[u8]) -> Vec<u8> {
    debug_assert!(false, "no compression in this build");
    Vec::new()
}

/// Never called in this build.
pub fn crc32(_: &[u8]) -> u32 {
    0
}
