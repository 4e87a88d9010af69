//! `binance-provider healthcheck`: asks the local gRPC health service whether the server is SERVING.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::chain::chain;

use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The address to dial for a server listening on `listen`: a wildcard address means "this host".
pub fn dial_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Checks `service` ("" = the whole server) at `addr`; `Ok` only for SERVING, else a readable reason.
pub async fn check(addr: SocketAddr, service: &str, timeout: Duration) -> Result<(), String> {
    let target = dial_addr(addr);
    let call = async {
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| format!("bad address {target}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout)
            // tonic's default today; explicit because a delayed health answer fails a probe.
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {target}: {}", chain(&e)))?;
        let resp = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|s| format!("health check at {target} failed: {}", s.message()))?;
        let status = resp.into_inner().status();
        if status == ServingStatus::Serving {
            Ok(())
        } else {
            Err(format!("{target} reports {}", status.as_str_name()))
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {target} within {} ms",
                timeout.as_millis()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_map_to_loopback() {
        let a: SocketAddr = "0.0.0.0:50053".parse().unwrap();
        assert_eq!(dial_addr(a), "127.0.0.1:50053".parse().unwrap());
        let b: SocketAddr = "[::]:1".parse().unwrap();
        assert_eq!(dial_addr(b), "[::1]:1".parse().unwrap());
        let c: SocketAddr = "10.1.2.3:9".parse().unwrap();
        assert_eq!(dial_addr(c), c);
    }
}
