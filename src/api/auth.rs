//! Authentication of customers: HTTP Basic credentials (an e-mail and a password, or an
//! authentication token as the user name with any password) or `Authorization: Bearer
//! <token>` are read from the request and checked by the operation layer
//! (`crate::ops::accounts::credentials`), which throttles failed logins by the client's address (read
//! here too).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use ipnet::IpNet;

use crate::error::{ApiError, ApiResult};
use crate::ops::state::AppState;
use crate::ops::{Caller, Origin, Via, accounts::credentials, accounts::token, audit};

/// What a request authenticates with.
#[derive(PartialEq, Eq)]
enum Credentials {
    Password {
        email: String,
        password: String,
    },
    /// An authentication token: a Basic user name that looks like one (its password is not
    /// looked at), or whatever a Bearer header carries.
    Token(String),
}

// By hand, so that no debug output ever shows a password or a token.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password { email, .. } => write!(f, "Password({email})"),
            Credentials::Token(_) => f.write_str("Token"),
        }
    }
}

/// Reads `Authorization: Basic ...` (an e-mail and a password, or a token and anything) or
/// `Authorization: Bearer <token>`.
fn read_credentials(headers: &HeaderMap) -> ApiResult<Credentials> {
    let value = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::CredentialsMissing)?;
    let (scheme, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or(ApiError::CredentialsMissing)?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = encoded.trim();
        if token.is_empty() {
            return Err(ApiError::CredentialsMissing);
        }
        return Ok(Credentials::Token(token.to_string()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::CredentialsMissing);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::Unauthenticated)?;
    let decoded = String::from_utf8(decoded).map_err(|_| ApiError::Unauthenticated)?;
    // FCO's clients send a token as the user name, some with no password and no colon.
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    if token::looks_like_token(user) {
        return Ok(Credentials::Token(user.to_string()));
    }
    if !decoded.contains(':') {
        return Err(ApiError::Unauthenticated);
    }
    Ok(Credentials::Password {
        email: user.to_string(),
        password: password.to_string(),
    })
}

/// Who is calling, from the request's Basic credentials or Bearer token. Credentials that were
/// given and are wrong are a failed login for the audit trail (no credentials at all are not a
/// login).
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    origin: Origin,
) -> ApiResult<Caller> {
    match read_credentials(headers)? {
        Credentials::Token(token) => credentials::authenticate_token(state, &token, origin).await,
        Credentials::Password { email, password } => {
            authenticate_password(state, &email, &password, origin).await
        }
    }
}

/// Who is calling, from an e-mail and a password: the one check of passwords for every adapter
/// (Basic credentials here, the control panel's sign-in form), with the login throttle, and a
/// failed login for the audit trail when they are wrong.
pub async fn authenticate_password(
    state: &AppState,
    email: &str,
    password: &str,
    origin: Origin,
) -> ApiResult<Caller> {
    let address = origin.address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let caller = credentials::authenticate(state, email, password, address).await;
    if let Err(ApiError::Unauthenticated) = caller {
        audit::failed_login(state, email, origin);
    }
    caller
}

/// The address a request comes from, as failed logins are counted: the peer's, or, when the
/// peer is a trusted reverse proxy (`--trusted-proxy`), the address its `X-Forwarded-For`
/// names (the last one that is not itself a trusted proxy: what comes before it is the
/// client's to write).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// Where a call comes from, for the audit trail (no address when the server runs without
    /// connection info).
    pub fn origin(self, via: Via) -> Origin {
        Origin {
            address: (!self.0.is_unspecified()).then_some(self.0),
            via,
        }
    }
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        // Served without connection info (as in tests of the router alone), every request is
        // one unknown address.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        Ok(ClientAddress(client_address(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

/// Whether a request came over TLS. The server itself speaks only HTTP, so only a trusted
/// reverse proxy (`--trusted-proxy`) terminating TLS makes it so, by `X-Forwarded-Proto:
/// https`; the header from anyone else is ignored.
pub fn over_tls(parts: &Parts, trusted: &[IpNet]) -> bool {
    let Some(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return false;
    };
    let peer = peer.0.ip().to_canonical();
    trusted.iter().any(|net| net.contains(&peer))
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| {
        let ip = ip.to_canonical();
        trusted.iter().any(|net| net.contains(&ip))
    };
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.iter().rev() {
        // Some proxies write the client's port too.
        let hop = hop.trim();
        let Ok(ip) = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        else {
            break;
        };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// The header a 401 carries.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"extility\", charset=\"UTF-8\"";

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn basic(user_and_password: &str) -> HeaderMap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_and_password);
        with_authorization(&format!("Basic {encoded}"))
    }

    #[test]
    fn tokens_come_as_basic_user_names_or_bearer_headers() {
        let token = |t: &str| Credentials::Token(t.to_string());
        assert_eq!(
            read_credentials(&basic("ext_abc:")).unwrap(),
            token("ext_abc")
        );
        assert_eq!(
            read_credentials(&basic("ext_abc:anything")).unwrap(),
            token("ext_abc")
        );
        assert_eq!(
            read_credentials(&basic("ext_abc")).unwrap(),
            token("ext_abc")
        );
        assert_eq!(
            read_credentials(&with_authorization("Bearer  ext_abc ")).unwrap(),
            token("ext_abc")
        );
        assert_eq!(
            read_credentials(&with_authorization("bearer whatever")).unwrap(),
            token("whatever")
        );
        assert_eq!(
            read_credentials(&basic("ext_bob@example.com:pw")).unwrap(),
            Credentials::Password {
                email: "ext_bob@example.com".into(),
                password: "pw".into()
            }
        );
        assert!(read_credentials(&basic("alice@example.com")).is_err());
        assert!(read_credentials(&with_authorization("Bearer ")).is_err());
        assert!(read_credentials(&with_authorization("Digest x")).is_err());
        assert!(read_credentials(&HeaderMap::new()).is_err());
        assert_eq!(format!("{:?}", token("ext_secret")), "Token");
    }

    fn from(peer: &str, forwarded: &[&str], trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_address(peer.parse().unwrap(), &headers, &trusted).to_string()
    }

    #[test]
    fn the_client_address_trusts_only_trusted_proxies() {
        // No trusted proxy: the header is the client's to write, and ignored.
        assert_eq!(from("192.0.2.1", &["10.9.9.9"], &[]), "192.0.2.1");
        assert_eq!(from("::ffff:192.0.2.1", &[], &[]), "192.0.2.1");
        // From a trusted proxy: the last address it did not add itself.
        let proxy = ["10.0.0.0/8"];
        assert_eq!(from("10.0.0.1", &["198.51.100.7"], &proxy), "198.51.100.7");
        assert_eq!(
            from("10.0.0.1", &["1.2.3.4, 198.51.100.7, 10.0.0.2"], &proxy),
            "198.51.100.7"
        );
        assert_eq!(
            from("10.0.0.1", &["1.2.3.4", "198.51.100.7"], &proxy),
            "198.51.100.7"
        );
        assert_eq!(from("10.0.0.1", &["junk, 10.0.0.3"], &proxy), "10.0.0.3");
        assert_eq!(
            from("10.0.0.1", &["198.51.100.7:4321"], &proxy),
            "198.51.100.7"
        );
        assert_eq!(
            from("10.0.0.1", &["[2001:db8::7]:4321"], &proxy),
            "2001:db8::7"
        );
        assert_eq!(from("10.0.0.1", &[], &proxy), "10.0.0.1");
        // Not from the proxy: the header is ignored.
        assert_eq!(from("192.0.2.1", &["198.51.100.7"], &proxy), "192.0.2.1");
    }
}
