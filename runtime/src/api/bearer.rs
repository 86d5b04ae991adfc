//! The client side of API keys: an interceptor that sends one with every
//! call (the CLI, tests and benchmarks use it).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Adds `authorization: Bearer <key>` to every call (nothing when None).
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(..)"
        } else {
            "Bearer(none)"
        })
    }
}

/// A channel whose calls carry an API key.
pub type KeyedChannel = InterceptedService<Channel, Bearer>;

impl Bearer {
    /// An interceptor sending `key`; None if the key cannot be a header.
    pub fn new(key: &str) -> Option<Bearer> {
        let mut v: MetadataValue<Ascii> = format!("Bearer {}", key.trim()).parse().ok()?;
        v.set_sensitive(true);
        Some(Bearer(Some(v)))
    }

    /// `channel` with this key on every call.
    pub fn on(self, channel: Channel) -> KeyedChannel {
        InterceptedService::new(channel, self)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}
