//! mediavault-fetch: fetches a file by URL for an upload, and refuses to
//! reach anything the operator has not allowed. It knows nothing of storage
//! or of the HTTP API: it hands back a 2xx answer's metadata and its body.
//!
//! The guard ([`AddressGuard`]) judges every address a connection could go
//! to: each address a name resolves to (in the resolver reqwest connects
//! with, so that what was checked is what is connected to) and each
//! address-literal host, on the first URL and on every redirect.
//! Environment proxies are ignored, so none can connect on its behalf.

mod error;
mod fetcher;
mod filename;
mod guard;
#[cfg(feature = "origin")]
pub mod origin;
mod policy;
mod redirect;
mod resolve;
mod target;

pub use error::{BadUrl, FetchError};
pub use fetcher::{Fetched, Fetcher, SetupError};
pub use filename::{clean_filename, names_a_file};
pub use guard::{AddressGuard, DEFAULT_DENIED, Verdict};
pub use policy::{FetchPolicy, user_agent};
pub use resolve::{Lookup, Resolver, SystemResolver};
