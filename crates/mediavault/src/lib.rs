//! The configuration of the `mediavault` binary, as a library so that it can
//! be loaded and checked on its own, without the rest of the service.

pub mod config;
