//! The pooled outbound client every call's requests share: hyper-util's
//! pooling client (it takes and returns the very body types
//! wasmtime-wasi-http hands the send hook, so bodies stream through without
//! a conversion, and it lets the resolver be ours), rustls with the system's
//! roots plus an optional private CA, and a resolver that refuses private
//! addresses. It may not decide what a step is granted (the send hook does).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use wasmtime_wasi_http::WasiBody;

/// How the client is set up (from `host` flags).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A PEM file of CA certificates trusted besides the system's (`--ca-file`).
    pub ca_file: Option<PathBuf>,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<PublicResolver>>;

/// The pooled client, built on first use (a workflow that makes no request
/// never reads the system's certificates).
pub struct OutboundClient {
    options: ClientOptions,
    client: OnceLock<Result<Client<Connector, WasiBody>, String>>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("options", &self.options)
            .finish()
    }
}

/// How long a connection may take to open (the call's deadline may cut it shorter).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl OutboundClient {
    /// A client with these options (nothing is read until the first request).
    pub fn new(options: ClientOptions) -> OutboundClient {
        OutboundClient {
            options,
            client: OnceLock::new(),
        }
    }

    /// Checks the options now (the CA file), so a bad flag fails at start.
    pub fn check(&self) -> Result<(), String> {
        self.client().map(|_| ())
    }

    /// The client, or why it cannot be built (a bad CA file).
    pub fn client(&self) -> Result<&Client<Connector, WasiBody>, String> {
        self.client
            .get_or_init(|| build(&self.options))
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn build(options: &ClientOptions) -> Result<Client<Connector, WasiBody>, String> {
    let tls = tls_config(options.ca_file.as_deref())?;
    let https = https_connector(
        HttpConnector::new_with_resolver(PublicResolver),
        tls,
        CONNECT_TIMEOUT,
    );
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(https))
}

/// `http` (set up as the host's clients use it) with TLS for https URLs.
pub fn https_connector<R>(
    mut http: HttpConnector<R>,
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> hyper_rustls::HttpsConnector<HttpConnector<R>> {
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// TLS as the host's clients use it: the system's roots plus the
/// certificates of `ca_file`, if given.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped, as every TLS client does.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect())
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "the CA file {} holds no PEM certificate",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("a certificate in {} is not usable: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}

/// A host name resolved only to private addresses: the request is refused.
#[derive(Debug)]
pub struct PrivateAddress {
    /// The name asked for.
    pub host: String,
    /// The first private address it resolved to.
    pub address: IpAddr,
}

impl std::fmt::Display for PrivateAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} resolves to the private address {}, which a grant by name may not reach (grant the address itself, e.g. \"http://{}:*\", to allow it)",
            self.host,
            self.address,
            match self.address {
                IpAddr::V6(a) => format!("[{a}]"),
                IpAddr::V4(a) => a.to_string(),
            }
        )
    }
}

impl std::error::Error for PrivateAddress {}

/// The `PrivateAddress` somewhere in `error`'s chain.
pub fn private_address<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a PrivateAddress> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<PrivateAddress>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<PrivateAddress>())
        {
            return Some(inner);
        }
        current = e.source();
    }
    None
}

/// Resolves names to their public addresses only, after DNS: a name that
/// resolves to loopback, a private range or the metadata endpoint is
/// refused (this stops DNS rebinding; an address a grant names itself
/// never comes here, it needs no lookup).
#[derive(Clone, Copy, Debug)]
pub struct PublicResolver;

impl tower_service::Service<Name> for PublicResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addresses
                .iter()
                .filter(|a| !is_private(a.ip()))
                .copied()
                .collect();
            match (public.is_empty(), addresses.first()) {
                (false, _) => Ok(public.into_iter()),
                (true, Some(first)) => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    PrivateAddress {
                        host,
                        address: first.ip(),
                    },
                )),
                (true, None) => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                )),
            }
        })
    }
}

/// Whether `address` is not on the public internet: loopback, private
/// ranges (RFC 1918, CGNAT, IPv6 ULA), link-local (the cloud metadata
/// endpoint 169.254.169.254 among them), unspecified, multicast, reserved
/// and documentation ranges, and the IPv4 forms embedded in IPv6.
pub fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(a) => private_v4(a),
        IpAddr::V6(a) => private_v6(a),
    }
}

fn private_v4(a: Ipv4Addr) -> bool {
    let [b0, b1, b2, _] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || b0 == 0
        // 100.64.0.0/10, shared address space (CGNAT).
        || (b0 == 100 && (b1 & 0b1100_0000) == 64)
        // 192.0.0.0/24, IETF protocol assignments.
        || (b0 == 192 && b1 == 0 && b2 == 0)
        // 198.18.0.0/15, benchmarking.
        || (b0 == 198 && (b1 & 0xfe) == 18)
        // 240.0.0.0/4, reserved.
        || b0 >= 240
}

fn private_v6(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return private_v4(v4);
    }
    let segments = a.segments();
    // 64:ff9b::/96 (NAT64) and ::/96 (IPv4-compatible) embed an IPv4 address.
    let embedded = Ipv4Addr::new(
        (segments[6] >> 8) as u8,
        segments[6] as u8,
        (segments[7] >> 8) as u8,
        segments[7] as u8,
    );
    // ::ffff:0:0:0/96 (IPv4-translated) embeds one too.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || segments[..6] == [0; 6]
        || segments[..6] == [0, 0, 0, 0, 0xffff, 0]
    {
        return a.is_loopback() || a.is_unspecified() || private_v4(embedded);
    }
    // 2002::/16 (6to4) embeds one in segments 1 and 2.
    if segments[0] == 0x2002 {
        let v4 = Ipv4Addr::new(
            (segments[1] >> 8) as u8,
            segments[1] as u8,
            (segments[2] >> 8) as u8,
            segments[2] as u8,
        );
        return private_v4(v4);
    }
    a.is_multicast()
        // 64:ff9b:1::/48, local-use NAT64.
        || segments[..3] == [0x64, 0xff9b, 1]
        // 2001::/32, Teredo (an IPv4 address, obfuscated, inside).
        || (segments[0] == 0x2001 && segments[1] == 0)
        // 100::/64, discard-only.
        || segments[..4] == [0x100, 0, 0, 0]
        // fec0::/10, the old site-local.
        || (segments[0] & 0xffc0) == 0xfec0
        // fc00::/7, unique local.
        || (segments[0] & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (segments[0] & 0xffc0) == 0xfe80
        // 2001:db8::/32, documentation.
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(text: &str) -> bool {
        is_private(text.parse().unwrap())
    }

    #[test]
    fn private_addresses_in_every_form_are_recognised() {
        for address in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "100::1",
        ] {
            assert!(private(address), "{address} is private");
        }
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(!private(address), "{address} is public");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        use tower_service::Service;
        let name: Name = "localhost".parse().unwrap();
        let error = PublicResolver.call(name).await.unwrap_err();
        let found = private_address(&error).expect("a private address");
        assert_eq!(found.host, "localhost");
        assert!(found.address.is_loopback());
    }
}
