//! The st-peter wire contract, `st_peter.auth.v1`, generated from
//! `proto/st_peter/auth/v1/auth.proto` at build time.

pub mod codec;

/// Messages and the `AuthService` client and server stubs.
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("st_peter.auth.v1");
    }
}

/// The encoded `FileDescriptorSet` of the contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("st_peter_descriptor");

pub use prost_types::{Duration, Timestamp};
