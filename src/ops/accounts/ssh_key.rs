//! Customers' SSH public keys, and the only module that writes `ssh_keys` and
//! `server_ssh_keys`.
//!
//! A customer stores keys (CreateSSHKey) and names them when creating a server (CreateServer's
//! optional `ssh_key_ids`); the server's first boot installs them: cloud-init reads them from
//! the NoCloud `user-data`, `extility-firstboot` from the metadata document's
//! `<ssh-public-keys>`.
//!
//! - **What is accepted.** One public key in OpenSSH's one-line format (`type base64
//!   [comment]`, as in `id_ed25519.pub` or `authorized_keys`, without options), parsed by the
//!   `ssh-key` crate: Ed25519, ECDSA (P-256, P-384, P-521), RSA of at least 2048 bits, and the
//!   FIDO security-key types. DSA (removed from OpenSSH), short RSA, certificates, private keys
//!   and anything else are INVALID_ARGUMENT with the reason. The stored text is the parser's
//!   re-encoding, so what reaches a guest is always one well-formed line.
//! - **Limits.** A key's text is at most [`MAX_KEY_TEXT`] bytes; a customer holds at most
//!   [`MAX_KEYS_PER_CUSTOMER`] keys; a name or a key (by fingerprint) is stored once per
//!   customer (CONFLICT).
//! - **A server refers to its keys.** Deleting a key takes it out of the metadata of every
//!   server that had it, so a key the customer no longer trusts is not installed by a server
//!   that has not booted yet (a key a guest installed stays in the guest: the platform never
//!   writes into a running guest).

use std::collections::HashMap;

use sqlx::AnyConnection;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, PublicKey};

use crate::db::is_unique_violation;
use crate::db::{Tx, now_ms};
use crate::error::{ApiError, ApiResult};
use crate::ops::wire::Timestamp;
use crate::ops::{Ctx, args, page, validate};
use crate::wire_struct;

/// The longest key text accepted (an RSA key of 16384 bits is about 2,800 bytes).
pub const MAX_KEY_TEXT: usize = 8 * 1024;
/// The most keys one customer may hold.
pub const MAX_KEYS_PER_CUSTOMER: i64 = 100;
/// The most keys one server may be given.
pub const MAX_KEYS_PER_SERVER: usize = 32;
/// RSA keys shorter than this are refused (OpenSSH refuses under 1024; NIST deprecates 1024).
const MIN_RSA_BITS: usize = 2048;

wire_struct! {
    /// One of the caller's SSH public keys. `public_key` is the key as OpenSSH writes it
    /// (`type base64 comment`); `fingerprint` is its SHA-256 fingerprint as `ssh-keygen -l`
    /// prints it (`SHA256:...`); `key_type` is its algorithm (`ssh-ed25519`, `ssh-rsa`,
    /// `ecdsa-sha2-nistp256`, ...).
    pub struct SshKey as "SSHKey" {
        pub ssh_key_id: i64,
        pub ssh_key_uuid: String,
        pub name: String,
        pub key_type: String,
        pub fingerprint: String,
        pub public_key: String,
        pub created: Timestamp,
    }
}

type SshKeyRow = (i64, String, String, String, String, String, i64);

fn from_row(
    (ssh_key_id, ssh_key_uuid, name, key_type, fingerprint, public_key, created): SshKeyRow,
) -> SshKey {
    SshKey {
        ssh_key_id,
        ssh_key_uuid,
        name,
        key_type,
        fingerprint,
        public_key,
        created: Timestamp(created),
    }
}

/// A public key as stored: its algorithm's name, its fingerprint and its one-line text.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedKey {
    pub key_type: String,
    pub fingerprint: String,
    pub text: String,
}

/// Parses and checks one OpenSSH public key (`argument` names it in errors).
pub fn parse_public_key(argument: &str, text: &str) -> ApiResult<ParsedKey> {
    let text = text.trim();
    if text.len() > MAX_KEY_TEXT {
        return Err(ApiError::invalid(
            argument,
            format!("must be at most {MAX_KEY_TEXT} bytes"),
        ));
    }
    if text.is_empty() {
        return Err(ApiError::invalid(argument, "must not be empty"));
    }
    if text.contains('\n') || text.contains('\r') {
        return Err(ApiError::invalid(
            argument,
            "must be one key on one line (as in id_ed25519.pub)",
        ));
    }
    if text.starts_with("-----BEGIN") {
        return Err(ApiError::invalid(
            argument,
            "is a private key or a PEM file; give the public key (the .pub file) in OpenSSH's \
             format",
        ));
    }
    let key = PublicKey::from_openssh(text).map_err(|e| {
        ApiError::invalid(
            argument,
            format!(
                "is not an OpenSSH public key (`type base64 comment`, as in id_ed25519.pub): \
                 {e}"
            ),
        )
    })?;
    match key.key_data() {
        KeyData::Ed25519(_) | KeyData::SkEd25519(_) | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Ecdsa(_) => {}
        KeyData::Rsa(rsa) => {
            let bits = rsa_bits(rsa.n.as_positive_bytes().unwrap_or_default());
            if bits < MIN_RSA_BITS {
                return Err(ApiError::invalid(
                    argument,
                    format!("is an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"),
                ));
            }
        }
        KeyData::Dsa(_) => {
            return Err(ApiError::invalid(
                argument,
                "is a DSA key, which OpenSSH no longer accepts; use Ed25519 (ssh-keygen -t \
                 ed25519)",
            ));
        }
        _ => {
            return Err(ApiError::invalid(
                argument,
                format!("is of a type not supported: {}", key.algorithm()),
            ));
        }
    }
    let algorithm = key.algorithm();
    // The comment goes to guests' authorized_keys: keep it printable and on one line.
    let comment: String = key
        .comment()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let body = key.to_openssh().map_err(ApiError::internal)?;
    // `to_openssh` writes the comment as given; rebuild the line with the cleaned one.
    let mut parts = body.split(' ');
    let (Some(kind), Some(base64)) = (parts.next(), parts.next()) else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "re-encoding an SSH key gave '{body}'"
        )));
    };
    let text = if comment.trim().is_empty() {
        format!("{kind} {base64}")
    } else {
        format!("{kind} {base64} {}", comment.trim())
    };
    Ok(ParsedKey {
        key_type: algorithm_name(&algorithm),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        text,
    })
}

fn algorithm_name(algorithm: &Algorithm) -> String {
    algorithm.as_str().to_string()
}

/// The bit length of an RSA modulus given as big-endian bytes without leading zeros.
fn rsa_bits(modulus: &[u8]) -> usize {
    let bytes = match modulus.iter().position(|b| *b != 0) {
        Some(first) => &modulus[first..],
        None => return 0,
    };
    bytes.len() * 8 - bytes[0].leading_zeros() as usize
}

pub async fn create_ssh_key(ctx: &Ctx, a: args::CreateSSHKey) -> ApiResult<SshKey> {
    let name = validate::name("name", &a.name)?;
    let parsed = parse_public_key("public_key", &a.public_key)?;
    let customer_id = ctx.customer_id();
    let mut tx = ctx.begin_write().await?;
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ssh_keys WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_one(&mut *tx)
        .await?;
    if held >= MAX_KEYS_PER_CUSTOMER {
        return Err(ApiError::LimitExceeded(format!(
            "you hold {held} SSH keys, the most a customer may hold; delete one first"
        )));
    }
    let same: Option<(String, String)> = sqlx::query_as(
        "SELECT name, fingerprint FROM ssh_keys WHERE customer_id = $1 \
         AND (name = $2 OR fingerprint = $3)",
    )
    .bind(customer_id)
    .bind(&name)
    .bind(&parsed.fingerprint)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((other_name, fingerprint)) = same {
        return Err(duplicate(&name, &parsed, &other_name, &fingerprint));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let created = now_ms();
    let inserted = sqlx::query_scalar::<_, i64>(
        "INSERT INTO ssh_keys (uuid, customer_id, name, key_type, public_key, fingerprint, \
         created) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(&uuid)
    .bind(customer_id)
    .bind(&name)
    .bind(&parsed.key_type)
    .bind(&parsed.text)
    .bind(&parsed.fingerprint)
    .bind(created)
    .fetch_one(&mut *tx)
    .await;
    let ssh_key_id = match inserted {
        Ok(id) => id,
        // Another call stored the same name or key between the check and the insert.
        Err(err) if is_unique_violation(&err) => {
            return Err(ApiError::Conflict(format!(
                "an SSH key named '{name}' or with fingerprint {} was stored just now",
                parsed.fingerprint
            )));
        }
        Err(err) => return Err(err.into()),
    };
    tx.commit().await?;
    Ok(SshKey {
        ssh_key_id,
        ssh_key_uuid: uuid,
        name,
        key_type: parsed.key_type,
        fingerprint: parsed.fingerprint,
        public_key: parsed.text,
        created: Timestamp(created),
    })
}

fn duplicate(name: &str, parsed: &ParsedKey, other_name: &str, fingerprint: &str) -> ApiError {
    if fingerprint == parsed.fingerprint {
        ApiError::Conflict(format!(
            "this key ({fingerprint}) is stored already, as '{other_name}'"
        ))
    } else {
        ApiError::Conflict(format!("you have an SSH key named '{name}' already"))
    }
}

pub async fn list_ssh_keys(ctx: &Ctx, a: args::ListSSHKeys) -> ApiResult<Vec<SshKey>> {
    let page = page::ascending(a.page_size, a.after_id)?;
    let rows: Vec<SshKeyRow> = sqlx::query_as(
        "SELECT id, uuid, name, key_type, fingerprint, public_key, created FROM ssh_keys \
             WHERE customer_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(ctx.customer_id())
    .bind(page.cursor)
    .bind(page.limit)
    .fetch_all(ctx.state.db.pool())
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

pub async fn delete_ssh_key(ctx: &Ctx, a: args::DeleteSSHKey) -> ApiResult<i64> {
    let mut tx = ctx.begin_write().await?;
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM ssh_keys WHERE id = $1 AND customer_id = $2")
            .bind(a.ssh_key_id)
            .bind(ctx.customer_id())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(id) = found else {
        return Err(ApiError::not_found("SSH key", a.ssh_key_id));
    };
    sqlx::query("DELETE FROM server_ssh_keys WHERE ssh_key_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM ssh_keys WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(1)
}

/// Checks that every id names one of the customer's keys (another customer's key answers
/// like a missing one) and returns them without repeats, in the order given.
pub async fn own_keys(
    conn: &mut AnyConnection,
    customer_id: i64,
    ids: &[i64],
) -> ApiResult<Vec<i64>> {
    let mut unique = Vec::new();
    for id in ids {
        if !unique.contains(id) {
            unique.push(*id);
        }
    }
    if unique.len() > MAX_KEYS_PER_SERVER {
        return Err(ApiError::invalid(
            "ssh_key_ids",
            format!("may name at most {MAX_KEYS_PER_SERVER} keys"),
        ));
    }
    for id in &unique {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM ssh_keys WHERE id = $1 AND customer_id = $2")
                .bind(id)
                .bind(customer_id)
                .fetch_optional(&mut *conn)
                .await?;
        if found.is_none() {
            return Err(ApiError::not_found("SSH key", *id));
        }
    }
    Ok(unique)
}

/// Gives a new server the keys `ids` (checked with [`own_keys`] in the same transaction).
pub async fn give_to_server(
    tx: &mut Tx,
    customer_id: i64,
    server_id: i64,
    ids: &[i64],
) -> ApiResult<()> {
    for id in own_keys(tx, customer_id, ids).await? {
        sqlx::query("INSERT INTO server_ssh_keys (server_id, ssh_key_id) VALUES ($1, $2)")
            .bind(server_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Forgets which keys a server had (before its row goes).
pub async fn forget_server(conn: &mut AnyConnection, server_id: i64) -> ApiResult<()> {
    sqlx::query("DELETE FROM server_ssh_keys WHERE server_id = $1")
        .bind(server_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The ids of a server's keys, in the order they were stored.
pub async fn ids_of_server(conn: &mut AnyConnection, server_id: i64) -> ApiResult<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT ssh_key_id FROM server_ssh_keys WHERE server_id = $1 ORDER BY ssh_key_id",
    )
    .bind(server_id)
    .fetch_all(conn)
    .await?)
}

/// The key ids of each server of a customer's VDC (`None`: of any) whose id is in
/// `first..=last` (a page of ListServers or ListAllServers).
pub async fn ids_of_vdc(
    conn: &mut AnyConnection,
    customer_id: i64,
    vdc_id: Option<i64>,
    (first, last): (i64, i64),
) -> ApiResult<HashMap<i64, Vec<i64>>> {
    // A VDC of -1 is none: every VDC of the customer (ids are never negative).
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT k.server_id, k.ssh_key_id FROM server_ssh_keys k \
         JOIN servers s ON s.id = k.server_id \
         WHERE (s.vdc_id = $1 OR $1 = -1) AND s.customer_id = $2 \
         AND k.server_id BETWEEN $3 AND $4 \
         ORDER BY k.server_id, k.ssh_key_id",
    )
    .bind(vdc_id.unwrap_or(-1))
    .bind(customer_id)
    .bind(first)
    .bind(last)
    .fetch_all(conn)
    .await?;
    let mut by_server: HashMap<i64, Vec<i64>> = HashMap::new();
    for (server_id, key_id) in rows {
        by_server.entry(server_id).or_default().push(key_id);
    }
    Ok(by_server)
}

/// The public keys (one-line texts) a server's first boot installs.
pub async fn keys_of_server(conn: &mut AnyConnection, server_id: i64) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT k.public_key FROM server_ssh_keys s JOIN ssh_keys k ON k.id = s.ssh_key_id \
         WHERE s.server_id = $1 ORDER BY k.id",
    )
    .bind(server_id)
    .fetch_all(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEjwn8tN+XsdS0cfzsfqzB16zzNjLK9gH6O1bWi2x0jm alice@laptop";

    #[test]
    fn an_ed25519_key_is_kept_with_its_fingerprint() {
        let parsed = parse_public_key("k", &format!("  {ED25519}\n")).unwrap();
        assert_eq!(parsed.key_type, "ssh-ed25519");
        assert_eq!(parsed.text, ED25519);
        assert!(parsed.fingerprint.starts_with("SHA256:"), "{parsed:?}");
    }

    #[test]
    fn other_texts_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("ssh-ed25519", "not an OpenSSH public key"),
            ("ssh-ed25519 AAAA!!!", "not an OpenSSH public key"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
            (&format!("{ED25519}\n{ED25519}"), "one line"),
            (&"A".repeat(MAX_KEY_TEXT + 1), "at most"),
        ] {
            let err = parse_public_key("public_key", text).unwrap_err();
            assert_eq!(err.code(), "INVALID_ARGUMENT");
            assert!(err.public_message().contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn rsa_bit_lengths() {
        assert_eq!(rsa_bits(&[0x80, 0, 0]), 24);
        assert_eq!(rsa_bits(&[0, 0x01, 0xff]), 9);
        assert_eq!(rsa_bits(&[]), 0);
    }
}
