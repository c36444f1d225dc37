//! mediavault-reaper: removes what must go — expired media, media deleted on
//! request, abandoned uploads — through the primitives `Vault` exposes for
//! it. It never talks to a store directly, and never imports the HTTP layer.
//!
//! The passes themselves are not written yet; the crate holds the place the
//! workspace layout gives them.
