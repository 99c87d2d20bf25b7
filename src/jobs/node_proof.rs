//! Proofs, between the nodes of a cluster, that a request to `/internal/v1/` comes from one of
//! them (customers never call those routes: the asking node checked their rights already).
//!
//! A proof is bound to one request: a ChaCha20-Poly1305 tag (of an empty message) over the
//! node asked, the method, the path with its query, a SHA-256 of the body and the expiry,
//! under a random 96-bit nonce. It is good for at most [`VALIDITY_MS`] (plus
//! [`CLOCK_SKEW_MS`] for clocks that differ), and a node accepts each nonce once: the nonces it
//! took are remembered until their proofs expire, so a captured request cannot be sent again,
//! nor its proof put on another request.
//!
//! The key is derived from the cluster key with HKDF-SHA256 under a label of its own, so a
//! proof's key is never the key that seals job secrets (`super::secrets`).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// How long a proof is good for.
pub const VALIDITY_MS: i64 = 30_000;
/// How far ahead of this node's clock the asking node's may be.
pub const CLOCK_SKEW_MS: i64 = 5_000;

/// The HKDF label of the proofs' key (the `info`).
const KEY_LABEL: &[u8] = b"extility node-to-node request proof v2";

pub struct NodeProofs {
    key: [u8; 32],
    /// Nonces of the proofs this node accepted, with their expiries.
    seen: Mutex<HashMap<[u8; 12], i64>>,
}

/// One request as a proof covers it.
pub struct Request<'a> {
    /// The id of the node asked (so a proof for one node is no good on another).
    pub node: &'a str,
    pub method: &'a str,
    /// The path and query, as the request line has them.
    pub path: &'a str,
    pub body: &'a [u8],
}

impl Request<'_> {
    fn associated_data(&self, expires_ms: i64) -> String {
        let body = Sha256::digest(self.body);
        format!(
            "{}\n{}\n{}\n{}\n{expires_ms}",
            self.node,
            self.method.to_ascii_uppercase(),
            self.path,
            hex::encode(body)
        )
    }
}

impl NodeProofs {
    pub fn new(cluster_key: &[u8; 32]) -> Self {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, cluster_key)
            .expand(KEY_LABEL, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        NodeProofs {
            key,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(self.key))
    }

    /// A proof for `request`, good for [`VALIDITY_MS`] from `now_ms`: `<expiry>.<nonce+tag>`.
    pub fn make(&self, request: &Request, now_ms: i64) -> ApiResult<String> {
        let expires_ms = now_ms + VALIDITY_MS;
        let nonce: [u8; 12] = rand::random();
        let aad = request.associated_data(expires_ms);
        let tag = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: b"",
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| ApiError::internal(anyhow::anyhow!("making a node proof failed")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&tag);
        Ok(format!("{expires_ms}.{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Whether `proof` is a proof for `request`, unexpired at `now_ms` and not accepted
    /// before (accepting it spends it).
    pub fn accept(&self, request: &Request, proof: &str, now_ms: i64) -> bool {
        let Some((expires, sealed)) = proof.split_once('.') else {
            return false;
        };
        let Ok(expires_ms) = expires.parse::<i64>() else {
            return false;
        };
        if expires_ms < now_ms || expires_ms > now_ms + VALIDITY_MS + CLOCK_SKEW_MS {
            return false;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(sealed) else {
            return false;
        };
        let Ok::<[u8; 28], _>(bytes) = bytes.try_into() else {
            return false;
        };
        let (nonce, tag) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("12 bytes");
        let aad = request.associated_data(expires_ms);
        let genuine = self
            .cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: tag,
                    aad: aad.as_bytes(),
                },
            )
            .is_ok();
        if !genuine {
            return false;
        }
        // Only genuine proofs reach the set, so only the cluster's nodes can grow it, and
        // each entry leaves when its proof expires.
        let mut seen = self.seen.lock().unwrap();
        seen.retain(|_, expiry| *expiry >= now_ms);
        seen.insert(nonce, expires_ms).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn console(path: &str) -> Request<'_> {
        Request {
            node: "node-a",
            method: "GET",
            path,
            body: b"",
        }
    }

    #[test]
    fn a_proof_holds_once_for_its_request_key_and_time() {
        let proofs = NodeProofs::new(&[7u8; 32]);
        let request = console("/internal/v1/console/abc");
        let proof = proofs.make(&request, NOW).unwrap();

        let other_node = NodeProofs::new(&[7u8; 32]);
        assert!(!other_node.accept(&console("/internal/v1/console/abd"), &proof, NOW));
        let post = Request {
            method: "POST",
            ..console("/internal/v1/console/abc")
        };
        assert!(!other_node.accept(&post, &proof, NOW));
        let with_body = Request {
            body: b"x",
            ..console("/internal/v1/console/abc")
        };
        assert!(!other_node.accept(&with_body, &proof, NOW));
        let elsewhere = Request {
            node: "node-b",
            ..console("/internal/v1/console/abc")
        };
        assert!(!other_node.accept(&elsewhere, &proof, NOW));
        assert!(!other_node.accept(&request, &proof, NOW + VALIDITY_MS + 1));
        assert!(!NodeProofs::new(&[8u8; 32]).accept(&request, &proof, NOW));
        let (expires, sealed) = proof.split_once('.').unwrap();
        let later = format!("{}.{sealed}", expires.parse::<i64>().unwrap() + 1);
        assert!(
            !other_node.accept(&request, &later, NOW),
            "the expiry is bound"
        );

        assert!(other_node.accept(&request, &proof, NOW + 1));
        assert!(
            !other_node.accept(&request, &proof, NOW + 2),
            "a proof is accepted once"
        );
        for garbage in ["", ".", "1.", "x.AAAA", "!!", &format!("{}.!!", NOW + 1)] {
            assert!(!other_node.accept(&request, garbage, NOW), "{garbage:?}");
        }
    }

    #[test]
    fn a_far_expiry_is_refused_and_spent_nonces_are_forgotten_when_they_expire() {
        let proofs = NodeProofs::new(&[7u8; 32]);
        let request = console("/x");
        let early = proofs
            .make(&request, NOW + VALIDITY_MS + CLOCK_SKEW_MS)
            .unwrap();
        assert!(!proofs.accept(&request, &early, NOW - 1));
        let proof = proofs.make(&request, NOW).unwrap();
        assert!(proofs.accept(&request, &proof, NOW));
        let fresh = proofs.make(&request, NOW + 2 * VALIDITY_MS).unwrap();
        assert!(proofs.accept(&request, &fresh, NOW + 2 * VALIDITY_MS));
        assert_eq!(proofs.seen.lock().unwrap().len(), 1, "the expired one left");
    }

    #[test]
    fn the_proof_key_is_not_the_cluster_key() {
        let cluster_key = [7u8; 32];
        assert_ne!(NodeProofs::new(&cluster_key).key, cluster_key);
    }
}
