//! Library side of the Spike tools: the parts that tests and fuzz targets call directly.

pub mod backup;
pub mod inspect;
pub mod server;
pub mod text;
