//! A TLS front for a local plain-TCP server (moto, a provider stand-in), on a random loopback
//! port, so the clients' TLS stack is exercised end to end without network access.
//!
//! It terminates TLS with the test certificate in `tests/fixtures/tls` (signed by a test CA that
//! nothing trusts unless told to) and copies bytes to the upstream address. ALPN selects
//! `http/1.1`, what moto and the stand-ins speak (and what DynamoDB answers: the AWS client
//! offers `h2` too).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// The test CA's certificate, PEM: what a client must trust to reach a [`TlsProxy`].
pub const TEST_CA_PEM: &[u8] = include_bytes!("../fixtures/tls/ca.pem");
/// A CA that signed nothing here: a client trusting only it must refuse a [`TlsProxy`].
pub const OTHER_CA_PEM: &[u8] = include_bytes!("../fixtures/tls/other-ca.pem");
const SERVER_CERT_PEM: &[u8] = include_bytes!("../fixtures/tls/server.pem");
const SERVER_KEY_PEM: &[u8] = include_bytes!("../fixtures/tls/server.key");

pub struct TlsProxy {
    addr: SocketAddr,
    handshakes: Arc<AtomicU64>,
    failed_handshakes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TlsProxy {
    /// Listens on a random loopback port and forwards each connection, after the TLS
    /// handshake, to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let cert = CertificateDer::from_pem_slice(SERVER_CERT_PEM).expect("test certificate");
        let key = PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM).expect("test key");
        let mut config =
            ServerConfig::builder_with_provider(tollgate::adapters::tls::ring_provider())
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handshakes = Arc::new(AtomicU64::new(0));
        let failed_handshakes = Arc::new(AtomicU64::new(0));
        let (ok, failed) = (handshakes.clone(), failed_handshakes.clone());
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, ok, failed) = (acceptor.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    ok.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut upstream) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            addr,
            handshakes,
            failed_handshakes,
            task,
        }
    }

    /// `https://localhost:<port>`: the name the test certificate is issued for.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Completed TLS handshakes so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Handshakes a client abandoned (for instance because it does not trust the test CA).
    /// The client may report its refusal before this side has read the alert, so this waits
    /// (up to 5 s) for at least one.
    pub async fn failed_handshakes(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let failed = self.failed_handshakes.load(Ordering::Relaxed);
            if failed > 0 || tokio::time::Instant::now() >= deadline {
                return failed;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
